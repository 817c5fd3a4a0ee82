#!/usr/bin/env bash
# Build the code-execution sandbox image autobots-sandbox:latest without any
# container registry.
#
# Why debootstrap: machines running autobots may reach Debian's package mirror
# but no image registry, so `docker pull python:3.11-slim` is not an option.
# A minimal Debian root file system with python3 is bootstrapped from the same
# mirror the host's apt uses and imported as an image. Users who can pull use
# the Dockerfile at the repo root instead.
#
# Usage: scripts/build-sandbox-image.sh [--force] [--no-cache] [--tag NAME]
#   --force     rebuild the image even if it already exists
#   --no-cache  also redo the debootstrap instead of reusing the cached rootfs tar
#   --tag NAME  image name (default autobots-sandbox:latest)
# Environment:
#   DOCKER_HOST               engine to import into (default: docker's default)
#   AUTOBOTS_SANDBOX_CACHE    cache dir for the rootfs tar (default /var/cache/autobots-sandbox)
#   AUTOBOTS_SANDBOX_MIRROR   Debian mirror URL (default: read from the host's apt sources)
#   AUTOBOTS_SANDBOX_SUITE    Debian suite (default: the host's VERSION_CODENAME)
#   AUTOBOTS_SANDBOX_PACKAGES extra comma separated packages to include
# Needs root (debootstrap, chroot).
set -euo pipefail

TAG="autobots-sandbox:latest"
FORCE=0
NO_CACHE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --force) FORCE=1 ;;
        --no-cache) NO_CACHE=1; FORCE=1 ;;
        --tag) TAG="$2"; shift ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "build-sandbox-image.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

die() { echo "build-sandbox-image.sh: $*" >&2; exit 1; }

command -v docker >/dev/null 2>&1 || die "docker CLI not found (apt-get install -y docker.io)"
docker info >/dev/null 2>&1 || die "Docker engine not reachable (DOCKER_HOST=${DOCKER_HOST:-default}); start it with scripts/start-dockerd.sh and export the DOCKER_HOST it prints"

# The sandbox user's uid: src/execution/settings.py DOCKER_SANDBOX_UID (above UID_MAX, so never
# a person's uid on the host). An image made for another uid is rebuilt.
SANDBOX_UID=61000
if [ "${FORCE}" -eq 0 ] && docker image inspect "${TAG}" >/dev/null 2>&1; then
    built_uid="$(docker image inspect "${TAG}" --format '{{index .Config.Labels "autobots.sandbox.uid"}}')"
    if [ "${built_uid}" = "${SANDBOX_UID}" ]; then
        echo "image ${TAG} already exists (use --force to rebuild)"
        exit 0
    fi
    echo "image ${TAG} was built for sandbox uid '${built_uid:-1000}': rebuilding for ${SANDBOX_UID}"
fi

[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap and chroot need it)"

# shellcheck disable=SC1091
. /etc/os-release
SUITE="${AUTOBOTS_SANDBOX_SUITE:-${VERSION_CODENAME:-bookworm}}"

# The mirror the host's apt already uses: the first URI serving the main
# (non-security) suite, from deb822 .sources files or one-line .list files.
find_mirror() {
    local f uri
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        uri="$(awk -v suite="${SUITE}" '
            BEGIN { RS=""; FS="\n" }
            {
                uris=""; suites=""; types=""
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^URIs:/)   { sub(/^URIs:[ \t]*/, "", $i);   uris=$i }
                    if ($i ~ /^Suites:/) { sub(/^Suites:[ \t]*/, "", $i); suites=$i }
                    if ($i ~ /^Types:/)  { sub(/^Types:[ \t]*/, "", $i);  types=$i }
                }
                if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ")) {
                    split(uris, u, " "); print u[1]; exit
                }
            }' "$f")"
        if [ -n "${uri}" ]; then echo "${uri}"; return; fi
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        uri="$(awk -v suite="${SUITE}" '
            $1 == "deb" {
                i = 2
                if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                if ($(i + 1) == suite) { print $i; exit }
            }' "$f")"
        if [ -n "${uri}" ]; then echo "${uri}"; return; fi
    done
}

MIRROR="${AUTOBOTS_SANDBOX_MIRROR:-$(find_mirror)}"
[ -n "${MIRROR}" ] || die "no apt mirror for suite ${SUITE} found in /etc/apt; set AUTOBOTS_SANDBOX_MIRROR"

CACHE_DIR="${AUTOBOTS_SANDBOX_CACHE:-/var/cache/autobots-sandbox}"
PACKAGES="python3${AUTOBOTS_SANDBOX_PACKAGES:+,${AUTOBOTS_SANDBOX_PACKAGES}}"
CACHE_KEY="$(printf '%s|%s|%s|%s' "${SUITE}" "${MIRROR}" "${PACKAGES}" "${SANDBOX_UID}" | sha256sum | cut -c1-12)"
ROOTFS_TAR="${CACHE_DIR}/rootfs-${SUITE}-${CACHE_KEY}.tar"
mkdir -p "${CACHE_DIR}"

if [ "${NO_CACHE}" -eq 1 ] || [ ! -s "${ROOTFS_TAR}" ]; then
    command -v debootstrap >/dev/null 2>&1 || die "debootstrap not found (apt-get install -y debootstrap)"
    WORK="$(mktemp -d "${CACHE_DIR}/build.XXXXXX")"
    cleanup() {
        # debootstrap may leave proc/sys mounted if it fails midway.
        for m in proc sys dev/pts dev; do
            mountpoint -q "${WORK}/rootfs/${m}" 2>/dev/null && umount -l "${WORK}/rootfs/${m}" || true
        done
        rm -rf "${WORK}"
    }
    trap cleanup EXIT
    ROOTFS="${WORK}/rootfs"

    echo "debootstrap ${SUITE} from ${MIRROR} (packages: ${PACKAGES})"
    debootstrap --variant=minbase --include="${PACKAGES}" "${SUITE}" "${ROOTFS}" "${MIRROR}" \
        >"${WORK}/debootstrap.log" 2>&1 || { tail -n 30 "${WORK}/debootstrap.log" >&2; die "debootstrap failed"; }

    # `python` is what LLM-written shell snippets and autogen call.
    ln -sf python3 "${ROOTFS}/usr/bin/python"
    # Non-root user; its uid is what the executor runs code as.
    chroot "${ROOTFS}" /usr/sbin/groupadd --gid "${SANDBOX_UID}" sandbox
    chroot "${ROOTFS}" /usr/sbin/useradd --uid "${SANDBOX_UID}" --gid "${SANDBOX_UID}" --create-home \
        --home-dir /home/sandbox --shell /bin/bash sandbox
    mkdir -p "${ROOTFS}/workspace"
    chown "${SANDBOX_UID}:${SANDBOX_UID}" "${ROOTFS}/workspace"
    chroot "${ROOTFS}" /usr/bin/timeout --version >/dev/null || die "coreutils timeout missing in rootfs"
    chroot "${ROOTFS}" /usr/bin/python --version >/dev/null || die "python missing in rootfs"

    # Drop what code in the sandbox never needs, to keep the image small.
    rm -rf "${ROOTFS}"/var/cache/apt/archives/*.deb "${ROOTFS}"/var/lib/apt/lists/* \
        "${ROOTFS}"/usr/share/doc/* "${ROOTFS}"/usr/share/man/* "${ROOTFS}"/usr/share/info/* \
        "${ROOTFS}"/var/log/* "${ROOTFS}"/dev/* "${ROOTFS}"/proc/* "${ROOTFS}"/sys/* "${ROOTFS}"/tmp/*

    tar --numeric-owner -C "${ROOTFS}" -cf "${ROOTFS_TAR}.part" .
    mv "${ROOTFS_TAR}.part" "${ROOTFS_TAR}"
    echo "cached rootfs at ${ROOTFS_TAR}"
else
    echo "using cached rootfs ${ROOTFS_TAR}"
fi

docker import \
    --change 'USER sandbox' \
    --change 'WORKDIR /workspace' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV HOME=/home/sandbox' \
    --change 'LABEL org.opencontainers.image.title=autobots-sandbox' \
    --change "LABEL autobots.sandbox.uid=${SANDBOX_UID}" \
    --change 'CMD ["sleep","infinity"]' \
    - "${TAG}" <"${ROOTFS_TAR}" >/dev/null
echo "built ${TAG}"
docker image inspect "${TAG}" --format 'size {{.Size}} bytes, user {{.Config.User}}, workdir {{.Config.WorkingDir}}'
