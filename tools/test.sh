#!/usr/bin/env bash
# Install what the tests need and run them (the README's second command).
set -euo pipefail
cd "$(dirname "$0")/.."
# torch pinned, never unpinned: an unpinned torch pulls several GB of CUDA packages (this
# machine's package index serves the CPU build of 2.13.0)
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[test]"
python -m pytest -q
