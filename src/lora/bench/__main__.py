"""python -m lora.bench: our loops against what a user would otherwise run, same model, data and machine.

Training: (a) naive = batch 1, gradient accumulation to the effective batch, random order, fp32,
the model called on the processor's output; (b) ours = the runner's own step
(:func:`lora.training.loop.backward_step` on :class:`lora.data.batching.BatchLoader` batches: ``--batch-size``
length-bucketed clips, every target token weighing the same), accumulation to the same effective
batch, in fp32 and (where the machine has bf16 units) in bf16; (c) transformers' ``Seq2SeqTrainer`` with
the same PEFT adapter, batch and accumulation, set up as its documentation recommends for speed
(:mod:`lora.bench.peers`). Transcription: (a) per-utterance ``generate``; (b)
:func:`lora.evaluation.evaluate.transcribe` at ``--eval-batch-size``, fp32 and bf16; (c) Moonshine's own
C++ runtime (moonshine-cpp) with its shipped int8 base-en, one clip at a time as its API works.

Every loop runs in its own fresh process, so one loop's freed memory cannot hide another's peak.
Each is timed after a warm-up, ``--repeats`` times, and the median is reported with peak memory
(process RSS on the CPU, allocated tensors on CUDA), in total and above the process's memory once
model and data are loaded. A quality check trains each training loop from the same adapter for
the same samples (``--quality-seeds`` data orders) and compares the held-out loss (computed as the
runner evaluates: fp32 on CPU) against the seed-to-seed spread.
Summary lines compare ours with each peer (speed, memory, held-out loss against the seed spread,
or RTF and WER), then give each training loop's TFLOP/s against the device's matrix rate measured
first (``peak:matmul``); the last line is the training speed-up over the naive loop.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Sequence

from lora.errors import LoraError, cli_main

TRAIN_LOOPS = ("naive", "ours-fp32", "ours-bf16", "hf-trainer-fp32", "hf-trainer-bf16")
TRANSCRIBERS = ("naive", "ours", "ours-bf16", "runtime")
MIB = 2**20


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lora.bench", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="offline", help="base model (default offline: imported base-en)")
    p.add_argument("--source", default="synth:default", help="data source (default synth:default)")
    p.add_argument("--utterances", type=int, default=96, help="utterances drawn for training batches (default 96)")
    p.add_argument("--transcribe-utterances", type=int, default=96,
                   help="held-out utterances, transcribed and scored (default 96; the offline preset's test split "
                        "has 183)")
    p.add_argument("--effective-batch", type=int, default=16,
                   help="utterances per optimizer step, every loop (default 16)")
    p.add_argument("--batch-size", type=int, default=8, help="our training batch size (default 8)")
    p.add_argument("--eval-batch-size", type=int, default=16,
                   help="our transcription batch size (default 16, the runner's)")
    p.add_argument("--steps", type=int, default=2, help="optimizer steps per timed repeat (default 2)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats; the median is reported (default 3)")
    p.add_argument("--quality-steps", type=int, default=8, help="steps of the equal-samples quality check (default 8)")
    p.add_argument("--quality-seeds", type=int, default=3, help="data orders per loop in the quality check (default 3)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"], help="default auto")
    p.add_argument("--pass-seconds", type=float, default=0.0,
                   help="our loops' padded audio seconds per forward pass, as the runner's flag (default 0: one pass "
                        "per batch, the same grouping as the peers)")
    p.add_argument("--compile", action="store_true",
                   help="our loops: torch.compile each encoder and decoder layer (dynamic shapes); the start-up is "
                        "reported apart")
    p.add_argument("--profile", metavar="FILE",
                   help="our loops: profile one training step after the timed ones (torch.profiler) and write where "
                        "its time went, device and host, to FILE.<phase>.txt")
    p.add_argument("--plain-attention", action="store_true",
                   help="our loops on CUDA: transformers' SDPA as it is, without lora.model.attention.aligned_sdpa")
    p.add_argument("--loops", default="all",
                   help="comma-separated phases to run, e.g. train:ours-bf16,train:hf-trainer-bf16 (default all)")
    p.add_argument("--phase", help=argparse.SUPPRESS)  # internal: run one loop in this process
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.effective_batch % args.batch_size:
        raise LoraError("--effective-batch must be a multiple of --batch-size")
    if args.phase:
        from lora.bench.loops import run_phase

        print(json.dumps(run_phase(args)))
        return 0
    forwarded = list(sys.argv[1:] if argv is None else argv)
    phases = ["peak:matmul"] + [f"train:{n}" for n in TRAIN_LOOPS] + [f"transcribe:{n}" for n in TRANSCRIBERS] + [
        "scale:1", "scale:2"]
    if args.loops != "all":
        wanted = args.loops.split(",")
        if unknown := sorted(set(wanted) - set(phases)):
            raise LoraError(f"--loops: unknown phase {', '.join(unknown)}; valid: {', '.join(phases)}")
        phases = ["peak:matmul"] + [ph for ph in phases if ph in wanted]
    results = {}
    for phase in phases:
        r = _child(phase, forwarded)
        results[phase] = r
        print(_line(phase, r, args), flush=True)
    _summary(results)
    return 0


def _child(phase: str, forwarded: list[str]) -> dict:
    ranks = int(phase.split(":")[1]) if phase.startswith("scale:") else 1
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"] if ranks > 1 \
        else [sys.executable]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **({"OMP_NUM_THREADS": "1"} if phase.startswith("scale:") else {})}
    proc = subprocess.run([*launch, "-m", "lora.bench", *forwarded, "--phase", phase], capture_output=True, text=True,
                          env=env)
    if proc.returncode != 0:
        import tempfile

        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        with tempfile.NamedTemporaryFile("w", prefix=f"bench-{phase.replace(':', '-')}-", suffix=".log", delete=False,
                                         dir=os.environ.get("BENCH_LOG_DIR")) as log:
            log.write(proc.stdout + proc.stderr)
        raise LoraError(f"bench phase {phase} failed: {tail} (its whole output: {log.name})")
    last = proc.stdout.strip().splitlines()[-1]
    return json.loads(last.split(":", 1)[1] if last.startswith("[rank") else last)  # torchrun may prefix "[rank0]:"


def _mem(r: dict) -> str:
    return f"peak {r['peak'] / MIB:.0f} MiB (+{r['peak_above_loaded'] / MIB:.0f} above loaded)"


def _line(phase: str, r: dict, args) -> str:
    if r.get("skipped"):
        return f"{phase:22s} skipped: {r['skipped']}"
    if phase == "peak:matmul":
        bf16 = f"{r['bf16'] / 1e12:.1f} TFLOP/s" if r["bf16"] else "not measured (no bf16 matrix units)"
        return (f"{phase:22s} ({r['shape']} matrix product on {r['device']}): bf16 {bf16}, "
                f"fp32 {r['fp32'] / 1e12:.1f} TFLOP/s")
    if phase.startswith("scale:"):
        return (f"{phase:22s} ({r['ranks']} rank{'s' if r['ranks'] > 1 else ''} x 1 thread, ours fp32, batch "
                f"{args.batch_size}, accum to {args.effective_batch}): {r['rate']:6.2f} audio-s/s")
    if phase.startswith("train"):
        shape = ("batch 1" if phase == "train:naive" else f"batch {args.batch_size}, " +
                 ("group_by_length, processor padding" if "trainer" in phase else "bucketed"))
        q = ", ".join(f"{x:.4f}" for x in r["quality"])
        extra = f", compiled (start-up {r['startup_s']:.0f} s)" if r.get("compiled") else ""
        return (f"{phase:22s} ({shape}, accum to {args.effective_batch}, {r['precision']}{extra}): {r['rate']:6.2f} "
                f"audio-s/s, {_mem(r)}; held-out loss after {r['quality_samples']} samples: {q}")
    shape = {"naive": "per-utterance generate",
             "runtime": "moonshine-cpp, shipped int8 base-en, one clip at a time"}.get(
        phase.split(":")[1], f"batch {args.eval_batch_size}, {r.get('precision', 'fp32')}")
    return f"{phase:22s} ({shape}): RTF {r['rtf']:.4f}, WER {_wer(r):.2%}, {_mem(r)}"


def _wer(r: dict) -> float:
    from lora.evaluation.evaluate import wer_metrics

    return wer_metrics(r["refs"], r["texts"])["wer"]


def _versus(name: str, r: dict, peer_name: str, peer: dict) -> str:
    """Speed, memory and held-out loss of one training loop against another, the loss judged by the seed spread."""
    gap = statistics.mean(r["quality"]) - statistics.mean(peer["quality"])
    noise = max(_spread(peer["quality"]), _spread(r["quality"]))
    verdict = "same within noise" if abs(gap) <= noise else ("better" if gap < 0 else "WORSE")
    return (f"training {name}: {r['rate'] / peer['rate']:.2f}x {peer_name} throughput, peak memory "
            f"{r['peak'] / peer['peak']:.2f}x of {peer_name} "
            f"({r['peak_above_loaded'] / max(peer['peak_above_loaded'], 1):.2f}x above loaded); held-out loss "
            f"{gap:+.4f} vs {peer_name}, seed-to-seed spread {noise:.4f}: {verdict}")


def _summary(results: dict) -> None:
    def ran(phase):
        return phase in results and not results[phase].get("skipped")

    ours = [(n, results[f"train:{n}"]) for n in ("ours-fp32", "ours-bf16") if ran(f"train:{n}")]
    if ran("transcribe:naive") and ran("transcribe:ours"):
        tn, to = results["transcribe:naive"], results["transcribe:ours"]
        same = sum(a == b for a, b in zip(tn["texts"], to["texts"], strict=True))
        print(f"transcription: {tn['rtf'] / to['rtf']:.2f}x faster, identical transcripts {same}/{len(tn['texts'])}, "
              f"memory {to['peak'] / tn['peak']:.2f}x of naive")
    for name in ("ours", "ours-bf16"):
        if ran("transcribe:runtime") and ran(f"transcribe:{name}"):
            rt, r = results["transcribe:runtime"], results[f"transcribe:{name}"]
            print(f"transcription {name} vs moonshine-cpp (int8): RTF {r['rtf']:.4f} vs {rt['rtf']:.4f} "
                  f"({rt['rtf'] / r['rtf']:.2f}x faster), WER {_wer(r):.2%} vs {_wer(rt):.2%}, memory "
                  f"{r['peak'] / rt['peak']:.2f}x of the runtime's process")
    for name, r in ours:
        if ran("train:naive"):
            print(_versus(name, r, "naive", results["train:naive"]))
        trainer = f"hf-trainer-{name.split('-')[1]}"
        if ran(f"train:{trainer}"):
            print(_versus(name, r, trainer, results[f"train:{trainer}"]))
    if ran("scale:1") and ran("scale:2"):
        ratio = results["scale:2"]["rate"] / results["scale:1"]["rate"]
        print(f"scaling (torchrun, gloo, one thread per rank): 2 ranks {ratio:.2f}x 1 rank, efficiency {ratio / 2:.0%}")
    flop = next((r["flop_per_audio_s"] for _, r in ours if r.get("flop_per_audio_s")), None)
    peak = results.get("peak:matmul", {})
    if flop:
        for phase, r in results.items():
            if phase.startswith("train:") and not r.get("skipped"):
                rate = r["rate"] * flop
                unit = "bf16" if peak.get("bf16") else "fp32"
                share = f", {rate / peak[unit]:.1%} of this device's {unit} matrix rate" if peak.get(unit) else ""
                print(f"compute {phase}: {rate / 1e12:.2f} TFLOP/s ({flop / 1e9:.2f} GFLOP per audio-second of a "
                      f"training step, torch.utils.flop_counter){share}")
    if ours and ran("train:naive"):
        best_name, best = max(ours, key=lambda x: x[1]["rate"])
        print(f"training speed-up: {best['rate'] / results['train:naive']['rate']:.2f}x ({best_name})")


def _spread(xs: list[float]) -> float:
    return max(xs) - min(xs)


if __name__ == "__main__":
    sys.exit(cli_main(main))
