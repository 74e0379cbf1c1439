#!/usr/bin/env bash
# Set up a fresh machine for moonshine-lora: system speech synthesizer, .venv, the package.
# Idempotent: a second run only checks. Used by README's two quick-start commands and CI.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v espeak-ng >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing espeak-ng (offline speech synthesizer) with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null
  else
    echo "setup: espeak-ng is missing. Install it: 'sudo apt-get install espeak-ng' (Debian/Ubuntu) or 'brew install espeak-ng' (macOS), then rerun." >&2
    exit 1
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# A pinned torch first: on this CI it is a CPU build on local disk (an unpinned torch would pull
# a multi-GB CUDA build). Any torch already installed in the range is kept.
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  .venv/bin/python -m pip install -q "torch==2.13.0" || .venv/bin/python -m pip install -q "torch>=2.4,<2.16"
fi
.venv/bin/python -m pip install -q -e ".[offline,dev]"
echo "setup: ready ($(.venv/bin/python -c 'import torch, transformers, peft; print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")'))"
