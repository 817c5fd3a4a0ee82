# The autobots server image: the API (`serve`) and the workers (`worker`) run from it.
# Built by docker-compose.yml; llama-cpp-python compiles llama.cpp here (about 6 minutes).
FROM python:3.11-slim

RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        build-essential cmake bubblewrap \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.txt pyproject.toml README.md ./
COPY src ./src
# llama.cpp without its AMX kernels: they crash (SIGSEGV) on the first token on CPUs that report
# AMX in VMs (see scripts/install-python.sh); the rest of -march=native stays.
RUN flags=""; if [ "$(uname -m)" = x86_64 ]; then flags="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"; fi; \
    CMAKE_ARGS="-DCMAKE_C_FLAGS='$flags' -DCMAKE_CXX_FLAGS='$flags'" \
    pip install --no-cache-dir -r requirements.txt

# The embedded model's weights are assembled here on first use; keep them on a volume.
ENV AUTOBOTS_EMBEDDED__CACHE_DIR=/var/lib/autobots/models \
    AUTOBOTS_DATA_DIR=/var/lib/autobots
VOLUME ["/var/lib/autobots"]
EXPOSE 8081
CMD ["python", "-m", "autobots", "serve", "--host", "0.0.0.0", "--port", "8081"]
