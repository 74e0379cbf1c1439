#!/usr/bin/env bash
# Set up a fresh machine for moonshine-lora: system speech synthesizer, .venv, the package.
# Idempotent: a second run only checks. Used by README's two quick-start commands and CI.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages. espeak-ng (the offline synthesizer) is required. Optional, the toolkit works
# without them: ffmpeg (reads MP3/M4A and raw G.722/GSM) and Debian's Asterisk English prompts, real
# recorded speech for lora.scripts.import_prompts (docs/recorded.md), over G.722 and over GSM; Chromium, the browser
# the studio's test drives (tests/test_studio_browser.py).
OPTIONAL="ffmpeg asterisk-core-sounds-en asterisk-core-sounds-en-g722 asterisk-core-sounds-en-gsm chromium"
have() {
  case "$1" in
    espeak-ng|ffmpeg) command -v "$1" >/dev/null 2>&1 ;;
    *) dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed" ;;
  esac
}
need=""
for pkg in espeak-ng $OPTIONAL; do have "$pkg" || need="$need $pkg"; done
if [ -n "$need" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "setup: installing$need with apt-get"
  apt-get update -qq || echo "setup: apt-get update failed; trying the install anyway" >&2
  if ! have espeak-ng; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null || true
  fi
  optional=$(for pkg in $OPTIONAL; do have "$pkg" || printf ' %s' "$pkg"; done)
  if [ -n "$optional" ] && ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $optional >/dev/null; then
    echo "setup: could not install$optional (optional; the toolkit works without them)" >&2
  fi
fi
if ! have espeak-ng; then
  echo "setup: espeak-ng is missing. Install it: 'sudo apt-get install espeak-ng' (Debian/Ubuntu) or 'brew install espeak-ng' (macOS), then rerun." >&2
  exit 1
fi
optional=$(for pkg in $OPTIONAL; do have "$pkg" || printf ' %s' "$pkg"; done)
if [ -n "$optional" ]; then
  echo "setup: optional packages missing:$optional (recorded-speech import, ffmpeg-only formats); to add them:" \
       "'sudo apt-get install --no-install-recommends $OPTIONAL' (Debian/Ubuntu; ffmpeg: 'brew install ffmpeg' on macOS)"
elif [ ! -f /usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz ]; then
  echo "setup: asterisk-core-sounds-en is installed but its transcripts are not (this image's dpkg excludes" \
       "/usr/share/doc?); lora.scripts.import_prompts needs /usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz" >&2
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
# The install is redone only when pyproject.toml changed since the last one (or the package is gone): a second run
# of the test loop should not spend its seconds in pip.
STAMP=.venv/.moonshine-lora-installed
WANT="$(sha256sum pyproject.toml | cut -d' ' -f1) $(pwd)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ] || ! .venv/bin/python -c "import lora, torch" >/dev/null 2>&1; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  # A pinned torch first: on this CI it is a CPU build on local disk (an unpinned torch would pull
  # a multi-GB CUDA build). Any torch already installed in the range is kept.
  if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    .venv/bin/python -m pip install -q "torch==2.13.0" || .venv/bin/python -m pip install -q "torch>=2.4,<2.16"
  fi
  .venv/bin/python -m pip install -q -e ".[offline,dev]"
  echo "$WANT" > "$STAMP"
fi
echo "setup: ready ($(.venv/bin/python -c 'import torch, transformers, peft; print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")'))"
