#!/usr/bin/env bash
# README's main-job command: set up (if needed), then train and evaluate a LoRA adapter fully
# offline (imported base-en model + synthesized speech corpus), export it int8 for Moonshine's
# runtimes (outputs/offline/runtime/, checked in moonshine-cpp, or in moonshine-voice where moonshine-cpp's
# AVX-512 build cannot run), and verify the run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
RUN=${RUN:-outputs/offline}
.venv/bin/python -m lora.runners.real_small --preset offline --output-dir "$RUN" "$@"
if WHY=$(.venv/bin/python -m lora.runtime.moonshine_cpp); then
    QUANTIZE=()
    if [ -r /proc/cpuinfo ] && grep -q '^flags' /proc/cpuinfo && ! grep -qE 'avx512_vnni|avx_vnni|amx_int8' /proc/cpuinfo; then
        # onnxruntime's int8 kernels saturate on x86 without VNNI, so an int8 export cannot be verified here
        echo "quick start: this CPU has no VNNI: exporting float (--quantize none); see docs/errors.md" >&2
        QUANTIZE=(--quantize none)
    fi
    .venv/bin/python -m lora.scripts.export_onnx --run "$RUN" --output "$RUN/runtime" --force ${QUANTIZE[@]+"${QUANTIZE[@]}"}
    .venv/bin/python -m lora.scripts.verify_run "$RUN"
else  # no Moonshine runtime runs on this machine (docs/errors.md): say so, verify the rest
    echo "quick start: NO RUNTIME EXPORT: $WHY" >&2
    .venv/bin/python -m lora.scripts.verify_run "$RUN"
    echo "quick start: trained, evaluated and verified in PyTorch; the runtime export was skipped (above)" >&2
fi
