#!/usr/bin/env bash
# Install what the tests need and run them (the README's second command).
set -euo pipefail
cd "$(dirname "$0")/.."
# The C reader's tests (tests/test_native.py) build native/ with CMake: they need cmake, a C
# compiler and libzstd-dev, installed here with apt-get when missing (sudo unless root). They are
# never skipped: without these they fail, so a fresh machine that cannot install them says so.
native_deps=()
command -v cmake >/dev/null 2>&1 || native_deps+=(cmake)
if command -v cc >/dev/null 2>&1; then
  echo '#include <zstd.h>' | cc -E -x c - >/dev/null 2>&1 || native_deps+=(libzstd-dev)
else
  native_deps+=(gcc libc6-dev libzstd-dev)
fi
if [ ${#native_deps[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  echo "tools/test.sh: installing ${native_deps[*]} for the C reader's tests" >&2
  if ! { $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
         $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${native_deps[@]}"; }; then
    echo "tools/test.sh: could not install ${native_deps[*]} with apt-get${sudo_cmd:+ (via sudo)}: install them" \
         "by hand; tests/test_native.py fails without them" >&2
  fi
fi
# torch pinned, never unpinned: an unpinned torch pulls several GB of CUDA packages (this
# machine's package index serves the CPU build of 2.13.0)
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[test]"
python -m pytest -q
