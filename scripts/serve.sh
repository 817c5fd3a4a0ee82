#!/usr/bin/env bash
# Install the server into .venv and start it (SQLite in the working directory; the chat API on
# http://127.0.0.1:8081 unless --host/--port say otherwise). Arguments go to `autobots serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
# Progress is shown: the first install compiles llama.cpp (about 5-6 minutes on 2 cores).
echo "== installing the server's requirements into .venv (the first time takes minutes)"
scripts/install-python.sh requirements.txt
exec .venv/bin/python -m autobots serve "$@"
