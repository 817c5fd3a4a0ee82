#!/usr/bin/env bash
# Start a private Docker engine for the autobots code sandbox.
#
# Why a private engine: the sandbox only needs a daemon that can run containers
# with network_mode=none. Running it on its own socket, data root and exec root
# keeps it apart from any system Docker, and --bridge=none / --iptables=false
# make sure no bridge, NAT rule or forwarding is ever set up on the host.
#
# Installs nothing (dockerd comes from the Debian package docker.io).
# Idempotent: if the engine already answers on the socket it only prints the
# DOCKER_HOST line.
#
# Environment overrides:
#   AUTOBOTS_DOCKER_ROOT    data root        (default /var/lib/autobots-docker)
#   AUTOBOTS_DOCKER_SOCK    unix socket path (default /run/autobots-docker.sock)
#   AUTOBOTS_DOCKER_EXEC    exec root        (default /run/autobots-docker-exec)
#   AUTOBOTS_DOCKER_PID     pid file         (default /run/autobots-docker.pid)
#   AUTOBOTS_DOCKER_LOG     daemon log       (default <data root>.log)
#   AUTOBOTS_DOCKER_WAIT_S  start-up wait    (default 60)
set -euo pipefail

ROOT="${AUTOBOTS_DOCKER_ROOT:-/var/lib/autobots-docker}"
SOCK="${AUTOBOTS_DOCKER_SOCK:-/run/autobots-docker.sock}"
EXEC_ROOT="${AUTOBOTS_DOCKER_EXEC:-/run/autobots-docker-exec}"
PIDFILE="${AUTOBOTS_DOCKER_PID:-/run/autobots-docker.pid}"
LOG="${AUTOBOTS_DOCKER_LOG:-${ROOT}.log}"
WAIT_S="${AUTOBOTS_DOCKER_WAIT_S:-60}"
HOST="unix://${SOCK}"

engine_up() {
    if command -v docker >/dev/null 2>&1; then
        docker -H "${HOST}" info >/dev/null 2>&1
    else
        # No CLI: fall back to the engine's HTTP ping over the socket.
        curl -fsS --max-time 2 --unix-socket "${SOCK}" http://localhost/_ping >/dev/null 2>&1
    fi
}

if engine_up; then
    echo "DOCKER_HOST=${HOST}"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "start-dockerd.sh: must run as root (dockerd needs it)" >&2
    exit 1
fi
if ! command -v dockerd >/dev/null 2>&1; then
    echo "start-dockerd.sh: dockerd not found; install it with: apt-get install -y docker.io" >&2
    exit 1
fi

# A pid file left by a daemon that died would make dockerd refuse to start.
if [ -f "${PIDFILE}" ]; then
    old_pid="$(cat "${PIDFILE}" 2>/dev/null || true)"
    if [ -n "${old_pid}" ] && kill -0 "${old_pid}" 2>/dev/null; then
        echo "start-dockerd.sh: dockerd (pid ${old_pid}) is running but ${HOST} does not answer yet; waiting" >&2
    else
        rm -f "${PIDFILE}"
    fi
fi

mkdir -p "${ROOT}" "${EXEC_ROOT}" "$(dirname "${SOCK}")" "$(dirname "${PIDFILE}")" "$(dirname "${LOG}")"

if [ ! -f "${PIDFILE}" ]; then
    # setsid + nohup: the daemon must outlive this script and its terminal.
    setsid nohup dockerd \
        --bridge=none \
        --iptables=false \
        --ip-forward=false \
        --ip-masq=false \
        --data-root "${ROOT}" \
        --exec-root "${EXEC_ROOT}" \
        --host "${HOST}" \
        --pidfile "${PIDFILE}" \
        >>"${LOG}" 2>&1 </dev/null &
fi

deadline=$((SECONDS + WAIT_S))
until engine_up; do
    if [ "${SECONDS}" -ge "${deadline}" ]; then
        echo "start-dockerd.sh: engine did not answer on ${HOST} within ${WAIT_S}s; last log lines:" >&2
        tail -n 20 "${LOG}" >&2 || true
        exit 1
    fi
    sleep 0.5
done

echo "DOCKER_HOST=${HOST}"
