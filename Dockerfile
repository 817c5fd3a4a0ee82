# Sandbox image for LLM-written code, for machines that can pull from a registry.
# Machines without registry access build the equivalent image from Debian
# packages with scripts/build-sandbox-image.sh. Both give: python/python3,
# coreutils `timeout`, a non-root user `sandbox` (uid 1000) and /workspace.
#
#   docker build -t autobots-sandbox:latest .
#
# Only this Dockerfile is needed, so build with an empty context if the repo is
# large: docker build -t autobots-sandbox:latest - < Dockerfile
FROM python:3.11-slim

RUN groupadd --gid 1000 sandbox \
    && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/sandbox --shell /bin/bash sandbox \
    && mkdir -p /workspace \
    && chown 1000:1000 /workspace \
    && timeout --version >/dev/null

ENV HOME=/home/sandbox \
    LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1
USER sandbox
WORKDIR /workspace
CMD ["sleep", "infinity"]
