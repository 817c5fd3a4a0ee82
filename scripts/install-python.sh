#!/usr/bin/env bash
# Install a requirements file into .venv (made if missing), with llama.cpp built for this machine
# but without its AMX kernels. Used by serve.sh and test.sh; extra arguments go to pip.
#
#     scripts/install-python.sh requirements.txt [--quiet]
#
# Why AMX is left out: llama-cpp-python compiles llama.cpp with -march=native, and on a CPU that
# reports AMX (Intel Sapphire Rapids and later, as on this project's CI machines, which are VMs)
# llama.cpp then multiplies the weights with AMX tiles and crashes with SIGSEGV in
# ggml_backend_amx_mul_mat on the first token, for both shipped models. Everything else that
# -march=native enables (AVX-512, VNNI) stays. The wheel is built once per machine into
# ~/.cache/autobots/wheels (pip's own wheel cache would hand back a build made without these
# flags: its key is the source, not the flags), and a venv that holds an AMX build is repaired.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
requirements="$1"
shift

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check)

llama=$(grep -E '^llama-cpp-python(\[[a-z,]+\])?==' requirements.txt | head -1 | sed 's/\[.*\]//')
version="${llama##*==}"
installed=$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))' 2>/dev/null || true)
lib_dir=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/llama_cpp/lib
amx_build() { grep -qs ggml_backend_amx_mul_mat "$lib_dir"/libggml-cpu.so*; }

if [ "$installed" != "$version" ] || amx_build; then
    flags=""
    if [ "$(uname -m)" = x86_64 ]; then
        flags="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    fi
    wheels="${XDG_CACHE_HOME:-$HOME/.cache}/autobots/wheels/llama-cpp-python-$version-no-amx"
    if ! ls "$wheels"/llama_cpp_python-"$version"-*.whl >/dev/null 2>&1; then
        echo "== building llama.cpp (llama-cpp-python $version) for this machine: about 5-6 minutes on 2 cores"
        mkdir -p "$wheels"
        CMAKE_ARGS="-DCMAKE_C_FLAGS='$flags' -DCMAKE_CXX_FLAGS='$flags'" \
            "${pip[@]}" wheel "$@" --no-deps --no-cache-dir --no-binary llama-cpp-python \
            -w "$wheels" "llama-cpp-python==$version"
    fi
    "${pip[@]}" install "$@" --no-deps --force-reinstall "$wheels"/llama_cpp_python-"$version"-*.whl
    if amx_build; then
        echo "llama.cpp was built with its AMX kernels all the same: $lib_dir" >&2
        exit 1
    fi
fi

"${pip[@]}" install "$@" -r "$requirements"
