#!/usr/bin/env bash
# Install everything the test suite needs and run all of it: Debian packages (as root), the
# Python requirements into .venv (llama-cpp-python compiles: ~6 minutes the first time; the
# default model's weights are 1.1 GB), a private Docker engine and the sandbox image; then
# ruff, mypy and pytest. CI runs exactly this (.ci/run). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(docker.io bubblewrap debootstrap chromium chromium-driver)
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    missing=()
    for p in "${apt_packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "== installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
fi

echo "== python requirements"
scripts/install-python.sh requirements-dev.txt --quiet

if [ "$(id -u)" = 0 ] && command -v dockerd >/dev/null; then
    echo "== docker engine and sandbox image"
    docker_env=$(scripts/start-dockerd.sh | grep '^export DOCKER_HOST=\|^DOCKER_HOST=' || true)
    if [ -z "$docker_env" ]; then
        echo "the private Docker engine did not start (scripts/start-dockerd.sh)" >&2
        exit 1
    fi
    eval "$docker_env"
    export DOCKER_HOST
    scripts/build-sandbox-image.sh
    export AUTOBOTS_REQUIRE_DOCKER=1
fi

if [ "$(id -u)" = 0 ]; then
    # This machine has everything installed above: a missing piece must fail, not skip.
    export AUTOBOTS_REQUIRE_BROWSER=1 AUTOBOTS_REQUIRE_DEFAULT_MODEL=1 AUTOBOTS_REQUIRE_LOCAL=1
fi

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .

echo "== mypy"
.venv/bin/mypy

echo "== pytest"
exec .venv/bin/python -m pytest "$@"
