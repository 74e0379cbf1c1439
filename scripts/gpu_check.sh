#!/usr/bin/env bash
# Issue 21's GPU measurements in under ten minutes on one CUDA GPU (H100/H200): our training loop against the
# Hugging Face Seq2SeqTrainer at batch 256 (accumulation to 512), bf16 then fp32, with the device's own matrix
# rate, TFLOP/s, memory and the held-out loss of each loop after the same samples; a profile of our step;
# one forward pass per step; torch.compile; batch 32. Everything goes to $OUT/bench.txt (default OUT=outputs/gpu_check), profiles to
# $OUT/profile-*.txt, a failed phase's whole output to $OUT/bench-*.log.
#
# For a machine without network: scripts/gpu_prepare.sh (run where pip and espeak-ng work) puts the wheels the
# CUDA image lacks in .whl/ (installed here first), 600 synthesized clips of 3-6 s in .gpu/clips.jsonl (512 to
# train on, 88 held out) and base-en's config in .gpu/base-en-shaped. MODEL (default offline: the imported
# base-en, which needs the moonshine-cpp wheel) falls back, when that wheel is absent, to a base-en-shaped model
# with random weights built from that config: the same shapes and FLOPs, not the same loss values. Say which.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/gpu_check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
if [ -z "${SKIP_WHEELS:-}" ] && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:src
else
  export PYTHONPATH=src
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 BENCH_LOG_DIR=$OUT
LOG=$OUT/bench.txt
CLIPS=${CLIPS:-.gpu/clips.jsonl}
MODEL=${MODEL:-offline}
if [ "$MODEL" = offline ] && { [ -n "${NO_WHEEL_MODEL:-}" ] || ! $PY -c "import moonshine_cpp" 2>/dev/null; } \
   && [ -d .gpu/base-en-shaped ]; then
  MODEL=/tmp/base-en-shaped
  $PY - <<'PY' 2>&1 | grep -v Warning | tee -a "$LOG" || exit 1
import shutil, torch
from transformers import MoonshineConfig, MoonshineForConditionalGeneration
torch.manual_seed(0)
shutil.copytree(".gpu/base-en-shaped", "/tmp/base-en-shaped", dirs_exist_ok=True)
MoonshineForConditionalGeneration(MoonshineConfig.from_pretrained("/tmp/base-en-shaped")).save_pretrained("/tmp/base-en-shaped")
print("model: base-en-shaped, random weights (seed 0): the moonshine-cpp wheel that holds base-en is not installed")
PY
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$LOG"
$PY -c "import torch, transformers, peft, datasets, pyarrow; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'datasets', datasets.__version__, 'pyarrow', pyarrow.__version__)" 2>&1 | tail -1 | tee -a "$LOG"

RUNS=${RUNS:-bf16 fp32 plain pass compiled batch32}  # which of the runs below (job: the whole training job; bench-v2)
wanted() { case " $RUNS " in *" $1 "*) return 0 ;; esac; return 1; }  # wanted NAME: is NAME in $RUNS
bench() {  # bench NAME SECONDS ARGS...: one bench run, at most SECONDS long, appended to $LOG
  local name=$1 limit=$2; shift 2
  wanted "$name" || return 0
  echo "== $name: python -m lora.bench $*" | tee -a "$LOG"
  local t0=$SECONDS
  # shellcheck disable=SC2086
  timeout "$limit" $PY -m lora.bench "$@" ${EXTRA:-} 2>&1 | grep -v -i warn | tee -a "$LOG"
  echo "($name: $((SECONDS - t0)) s)" | tee -a "$LOG"
}
# EXTRA: arguments appended to every run (a dry run on a CPU: DEVICE=cpu EXTRA="--utterances 24 ...")
COMMON=(--model "$MODEL" --source "manifest:$CLIPS" --utterances 512 --transcribe-utterances 88 --device "${DEVICE:-cuda}"
        --batch-size 256 --effective-batch 512 --steps 2 --repeats 3 --quality-steps 4 --quality-seeds 3)
bench bf16 150 "${COMMON[@]}" --profile "$OUT/profile-bf16" --loops train:ours-bf16,train:hf-trainer-bf16
bench fp32 140 "${COMMON[@]}" --loops train:ours-fp32,train:hf-trainer-fp32
# ours alone (quick): RUNS=ours
bench ours 70 "${COMMON[@]}" --quality-seeds 2 --profile "$OUT/profile-ours" --loops train:ours-bf16
# transformers' SDPA as it is: base-en's 52-wide heads keep PyTorch's fused attention kernels off
bench plain 70 "${COMMON[@]}" --plain-attention --quality-seeds 2 --loops train:ours-bf16
# a step's 512 clips sorted by length and packed into passes of 2,000 padded seconds (--pass-seconds)
bench pass 70 "${COMMON[@]}" --pass-seconds 2000 --quality-seeds 2 --loops train:ours-bf16
bench compiled 120 "${COMMON[@]}" --compile --pass-seconds 2000 --quality-seeds 2 --profile "$OUT/profile-compiled" \
  --loops train:ours-bf16
bench batch32 80 "${COMMON[@]}" --batch-size 32 --effective-batch 64 --quality-seeds 2 \
  --loops train:ours-bf16,train:hf-trainer-bf16
# Moonshine v2 shapes (RUNS=bench-v2): random weights written here by import_model --random-init (it reads the
# tokenizer from the offline wheels), our loop in bf16 and fp32 on the same clips; speed and memory, no quality
if wanted bench-v2; then
  for shape in streaming-tiny streaming-small streaming-medium; do
    $PY -m lora.scripts.import_model --random-init "$shape" --output "/tmp/v2-$shape" --force 2>&1 | tail -1 | tee -a "$LOG"
    RUNS="$RUNS v2-$shape" bench "v2-$shape" 150 "${COMMON[@]}" --model "/tmp/v2-$shape" --quality-seeds 2 \
      --loops train:ours-bf16,train:ours-fp32
  done
fi
# the whole job on the GPU (RUNS=job): baseline, LoRA in bf16, guardrail checks, tuned, artifacts, --terms, then
# verify_run --relaxed on what it wrote. No canaries or replay (they need espeak-ng, absent there). With the
# base-en-shaped random weights this proves the mechanics on CUDA, not quality.
job() {
  wanted job || return 0
  echo "== job: python -m lora.runners.real_small --device cuda --precision bf16 ($MODEL)" | tee -a "$LOG"
  local t0=$SECONDS
  timeout 300 $PY -m lora.runners.real_small --model "$MODEL" --source "manifest:$CLIPS" --samples 0 --device cuda \
    --precision bf16 --split-by utterance --max-steps 40 --warmup-steps 4 --eval-every 10 --batch-size 16 --canary none --replay none \
    --terms "${TERMS:-.gpu/terms.txt}" --output-dir "$OUT/job" 2>&1 | grep -v -i warn | tail -25 | tee -a "$LOG"
  timeout 120 $PY -m lora.scripts.verify_run "$OUT/job" --relaxed 2>&1 | tail -20 | tee -a "$LOG"
  echo "(job: $((SECONDS - t0)) s)" | tee -a "$LOG"
}
job
echo "done: $OUT"
