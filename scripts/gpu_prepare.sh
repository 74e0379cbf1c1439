#!/usr/bin/env bash
# What scripts/gpu_check.sh needs on a GPU machine without network, made here (run after scripts/setup.sh):
#   .whl/  the wheels its CUDA image lacks (Python 3.12, x86-64), as this project's .venv pins them;
#   .gpu/clips.jsonl + .gpu/clips/  600 synthesized clips of 3-6 s (FLAC, 38 MB): 512 to train on, 88 held out
#                                   (the shipped sentences, 4 espeak-ng voices each, seed 1);
#   .gpu/base-en-shaped/  base-en's config, processor and tokenizer (weights are built there at random when the
#                         moonshine-cpp wheel, 55 MB, does not travel).
# Both folders are git-ignored through .git/info/exclude; together about 60 MiB (a device call carries 64).
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> .git/info/exclude
grep -qx "/.gpu/" .git/info/exclude 2>/dev/null || echo "/.gpu/" >> .git/info/exclude
rm -rf .gpu/clips .gpu/corpus
mkdir -p .whl .gpu/clips .gpu/base-en-shaped
version() { .venv/bin/python -c "import importlib.metadata as m; print(m.version('$1'))"; }
# transformers 5.25 needs a newer huggingface_hub (with httpx2) and tokenizers than the CUDA image's
for pkg in soundfile cffi pycparser soxr jiwer rapidfuzz datasets dill multiprocess filelock regex peft transformers \
           huggingface_hub hf_xet httpx2 httpcore2 truststore click tokenizers safetensors; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d .whl "$pkg==$(version "$pkg")"
done
.venv/bin/python -m lora.scripts.synth_corpus --output .gpu/corpus --voices-per-sentence 4 --seed 1
.venv/bin/python - <<'PY'
import json
import random
import shutil
from pathlib import Path

import soundfile as sf

from lora.data.sources import load_source
from lora.model.load import resolve_model

utts = [u for u in load_source("synth:.gpu/corpus", n=5000) if 3.0 <= u.duration <= 6.0]
random.Random(0).shuffle(utts)
rows = []
for i, u in enumerate(utts[:600]):
    sf.write(f".gpu/clips/{i:04d}.flac", u.audio, 16000, format="FLAC", subtype="PCM_16", compression_level=1.0)
    rows.append({"audio": f"clips/{i:04d}.flac", "text": u.text, "speaker": u.speaker})
Path(".gpu/clips.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
model = Path(resolve_model("offline"))
for name in ("config.json", "generation_config.json", "processor_config.json", "tokenizer.json", "tokenizer_config.json"):
    shutil.copy(model / name, Path(".gpu/base-en-shaped") / name)
print(f"{len(rows)} clips, {sum(u.duration for u in utts[:600]):.0f} s")
PY
rm -rf .gpu/corpus
du -sh .whl .gpu
