#!/usr/bin/env bash
# README's test command: set up (if needed), lint, and run the whole test suite offline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
.venv/bin/ruff check src tests scripts
.venv/bin/python -m pytest "$@"
