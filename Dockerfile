# Sandbox image for LLM-written code, for machines that can pull from a registry.
# Machines without registry access build the equivalent image from Debian
# packages with scripts/build-sandbox-image.sh. Both give: python/python3,
# coreutils `timeout`, a non-root user `sandbox` (uid 61000, above UID_MAX so never a
# person's uid on the host) and /workspace.
#
#   docker build -t autobots-sandbox:latest .
#
# Only this Dockerfile is needed, so build with an empty context if the repo is
# large: docker build -t autobots-sandbox:latest - < Dockerfile
FROM python:3.11-slim

RUN groupadd --gid 61000 sandbox \
    && useradd --uid 61000 --gid 61000 --create-home --home-dir /home/sandbox --shell /bin/bash sandbox \
    && mkdir -p /workspace \
    && chown 61000:61000 /workspace \
    && timeout --version >/dev/null

LABEL autobots.sandbox.uid=61000
ENV HOME=/home/sandbox \
    LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1
USER sandbox
WORKDIR /workspace
CMD ["sleep", "infinity"]
