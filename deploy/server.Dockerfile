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
RUN pip install --no-cache-dir -r requirements.txt

# The embedded model's weights are assembled here on first use; keep them on a volume.
ENV AUTOBOTS_EMBEDDED__CACHE_DIR=/var/lib/autobots/models \
    AUTOBOTS_DATA_DIR=/var/lib/autobots
VOLUME ["/var/lib/autobots"]
EXPOSE 8081
CMD ["python", "-m", "autobots", "serve", "--host", "0.0.0.0", "--port", "8081"]
