#!/usr/bin/env bash
# README's main-job command: set up (if needed), then train and evaluate a LoRA adapter fully
# offline (imported base-en model + synthesized speech corpus), export it int8 for Moonshine's
# C++ runtime (outputs/offline/runtime/, checked in moonshine-cpp), and verify the run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
RUN=${RUN:-outputs/offline}
.venv/bin/python -m lora.runners.real_small --preset offline --output-dir "$RUN" "$@"
if WHY=$(.venv/bin/python -m lora.runtime.moonshine_cpp); then
    .venv/bin/python -m lora.scripts.export_onnx --run "$RUN" --output "$RUN/runtime" --force
    .venv/bin/python -m lora.scripts.verify_run "$RUN"
else  # the wheel's moonshine-cpp cannot run on this CPU (docs/errors.md): say so, verify the rest
    echo "quick start: NO RUNTIME EXPORT: $WHY" >&2
    .venv/bin/python -m lora.scripts.verify_run "$RUN"
    echo "quick start: trained, evaluated and verified in PyTorch; the moonshine-cpp export was skipped (above)" >&2
fi
