#!/usr/bin/env bash
# Install what the tests need and run them (the README's second command).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e ".[test]"
python -m pytest -q
