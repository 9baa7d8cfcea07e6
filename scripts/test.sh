#!/usr/bin/env bash
# Install what is needed, then run the whole test suite (unit, integration, system).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
export PATH="$PWD/.venv/bin:$PATH"
exec python -m pytest -q "$@"
