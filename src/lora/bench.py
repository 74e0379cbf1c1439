"""python -m lora.bench: our loops against what a user would otherwise run, same model, data and machine.

Training: (a) naive = batch 1, gradient accumulation to the effective batch, random order, fp32,
the model called on the processor's output; (b) ours = the runner's own step
(:func:`lora.train.backward_step` on :class:`lora.batching.BatchLoader` batches: ``--batch-size``
length-bucketed clips, every target token weighing the same), accumulation to the same effective
batch, in fp32 and (where the machine has bf16 units) in bf16; (c) transformers' ``Seq2SeqTrainer`` with
the same PEFT adapter, batch and accumulation, set up as its documentation recommends for speed
(:mod:`lora.bench_peers`). Transcription: (a) per-utterance ``generate``; (b)
:func:`lora.evaluate.transcribe` at ``--eval-batch-size``, fp32 and bf16; (c) Moonshine's own
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
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lora.errors import LoraError, cli_main

TRAIN_LOOPS = ("naive", "ours-fp32", "ours-bf16", "hf-trainer-fp32", "hf-trainer-bf16")
TRANSCRIBERS = ("naive", "ours", "ours-bf16", "runtime")
MIB = 2**20


class PeakMemory:
    """Peak memory while active: CUDA allocated tensors on a GPU, sampled process RSS on the CPU."""

    def __init__(self, device):
        import psutil

        self.device, self.peak, self._stop, self._process = device, 0, threading.Event(), psutil.Process()

    def current(self) -> int:
        import torch

        if self.device.type == "cuda":
            return torch.cuda.memory_allocated()
        return self._process.memory_info().rss

    def __enter__(self):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            return self
        self.peak = self.current()

        def sample():
            while not self._stop.wait(0.005):
                self.peak = max(self.peak, self.current())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self.current())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lora.bench", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="offline", help="base model (default offline: imported base-en)")
    p.add_argument("--source", default="synth:default", help="data source (default synth:default)")
    p.add_argument("--utterances", type=int, default=96, help="utterances drawn for training batches (default 96)")
    p.add_argument("--transcribe-utterances", type=int, default=96,
                   help="held-out utterances, transcribed and scored (default 96; the offline preset's test split has 183)")
    p.add_argument("--effective-batch", type=int, default=16, help="utterances per optimizer step, every loop (default 16)")
    p.add_argument("--batch-size", type=int, default=8, help="our training batch size (default 8)")
    p.add_argument("--eval-batch-size", type=int, default=16, help="our transcription batch size (default 16, the runner's)")
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
                   help="our loops on CUDA: transformers' SDPA as it is, without lora.modeling.aligned_sdpa")
    p.add_argument("--loops", default="all",
                   help="comma-separated phases to run, e.g. train:ours-bf16,train:hf-trainer-bf16 (default all)")
    p.add_argument("--phase", help=argparse.SUPPRESS)  # internal: run one loop in this process
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.effective_batch % args.batch_size:
        raise LoraError("--effective-batch must be a multiple of --batch-size")
    if args.phase:
        print(json.dumps(_phase(args)))
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
        return (f"{phase:22s} ({r['shape']} matrix product on {r['device']}): bf16 {r['bf16'] / 1e12:.1f} TFLOP/s, "
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
    shape = {"naive": "per-utterance generate", "runtime": "moonshine-cpp, shipped int8 base-en, one clip at a time"}.get(
        phase.split(":")[1], f"batch {args.eval_batch_size}, {r.get('precision', 'fp32')}")
    return f"{phase:22s} ({shape}): RTF {r['rtf']:.4f}, WER {_wer(r):.2%}, {_mem(r)}"


def _wer(r: dict) -> float:
    from lora.evaluate import wer_metrics

    return wer_metrics(r["refs"], r["texts"])["wer"]


def _versus(name: str, r: dict, peer_name: str, peer: dict) -> str:
    """Speed, memory and held-out loss of one training loop against another, the loss judged by the seed spread."""
    gap = statistics.mean(r["quality"]) - statistics.mean(peer["quality"])
    noise = max(_spread(peer["quality"]), _spread(r["quality"]))
    verdict = "same within noise" if abs(gap) <= noise else ("better" if gap < 0 else "WORSE")
    return (f"training {name}: {r['rate'] / peer['rate']:.2f}x {peer_name} throughput, peak memory "
            f"{r['peak'] / peer['peak']:.2f}x of {peer_name} ({r['peak_above_loaded'] / max(peer['peak_above_loaded'], 1):.2f}x "
            f"above loaded); held-out loss {gap:+.4f} vs {peer_name}, seed-to-seed spread {noise:.4f}: {verdict}")


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
                share = f", {rate / peak['bf16']:.1%} of this device's bf16 matrix rate" if peak.get("bf16") else ""
                print(f"compute {phase}: {rate / 1e12:.2f} TFLOP/s ({flop / 1e9:.2f} GFLOP per audio-second of a training "
                      f"step, torch.utils.flop_counter){share}")
    if ours and ran("train:naive"):
        best_name, best = max(ours, key=lambda x: x[1]["rate"])
        print(f"training speed-up: {best['rate'] / results['train:naive']['rate']:.2f}x ({best_name})")


def _spread(xs: list[float]) -> float:
    return max(xs) - min(xs)


def _phase(args) -> dict:
    """One loop in this (fresh) process: returns its timing, memory and outputs."""
    import random

    import torch

    from lora import modeling as M
    from lora.data.sources import load_source
    from lora.errors import ModelError
    from lora.pipeline import resolve_source
    from lora.train import seed_everything

    kind, loop = args.phase.split(":")
    seed_everything(0)
    device = M.resolve_device(args.device)
    if kind == "peak":
        return _matmul_rates(device)
    if kind == "scale" and device.type == "cuda" and torch.cuda.device_count() < int(loop):
        return {"skipped": f"{loop} ranks need {loop} GPUs; this machine has {torch.cuda.device_count()}"}
    try:
        train_amp = M.train_autocast(device, "bf16" if loop.endswith("bf16") else "fp32")
    except ModelError as exc:
        return {"skipped": str(exc)}
    eval_amp = train_amp if (kind, loop) == ("transcribe", "ours-bf16") else M.autocast(device)  # quality: fp32 as the runner
    utts = list(load_source(resolve_source(args.source), n=args.utterances + args.transcribe_utterances))
    random.Random(0).shuffle(utts)
    held, utts = utts[: args.transcribe_utterances], utts[args.transcribe_utterances:]
    if loop == "runtime":
        from lora.bench_peers import runtime_transcription

        return {**runtime_transcription(args.model, held), "refs": [u.text for u in held]}
    s = _Loaded.load(args, device, loop, utts, held, train_amp, eval_amp)
    if kind == "scale":
        return _scaling_phase(args, s.model, s.processor, utts, s.labels, s.params, device)
    if kind == "train" and loop.startswith("hf-trainer"):
        from lora.bench_peers import trainer_phase

        return trainer_phase(args, s.model, s.processor, utts, s.labels, held, s.init, device, s.mem, s.loaded,
                             "bf16" if loop.endswith("bf16") else "fp32", eval_amp)
    return _train_phase(s) if kind == "train" else _transcribe_phase(s)


@dataclass
class _Loaded:
    """What a phase's loop works on: the model with a fresh adapter (``init``), its clips and labels, precisions."""

    args: argparse.Namespace
    device: object
    loop: str
    model: object
    processor: object
    utts: list
    held: list
    labels: list
    params: list
    init: dict
    train_amp: object
    eval_amp: object
    mem: PeakMemory
    loaded: int

    @classmethod
    def load(cls, args, device, loop: str, utts, held, train_amp, eval_amp) -> _Loaded:
        from peft import get_peft_model_state_dict

        from lora import modeling as M
        from lora.batching import encode_labels

        path = M.resolve_model(args.model, log=lambda _: None)
        processor = M.load_processor(path)
        base = M.load_model(path)
        model = M.attach_lora(base, 16, 32, 0.0, M.target_regex(base)).to(device)
        if loop.startswith("ours") and not args.plain_attention:
            M.use_aligned_attention(model, device)  # as the runner; the peers run attention as a user would
        mem = PeakMemory(device)
        return cls(args, device, loop, model, processor, utts, held,
                   [encode_labels(processor.tokenizer, u.text) for u in utts],
                   [q for q in model.parameters() if q.requires_grad],
                   {k: v.clone() for k, v in get_peft_model_state_dict(model).items()}, train_amp, eval_amp, mem,
                   mem.current())

    @property
    def batch(self) -> int:
        return 1 if self.loop == "naive" else self.args.batch_size

    def order(self, seed: int):
        """Endless training batches: random single clips (naive), else length-bucketed epochs."""
        import random

        from lora.batching import bucketed_batches

        r = random.Random(seed)
        while True:
            if self.batch == 1:
                yield from ([i] for i in r.sample(range(len(self.utts)), len(self.utts)))
            else:
                yield from bucketed_batches([u.n_samples for u in self.utts], self.batch, r)


class _Steps:
    """Optimizer steps of one training loop over one data order. Ours: the runner's step
    (:func:`lora.train.backward_step` on :class:`lora.batching.BatchLoader` batches, the next step submitted
    first, as the runner does). Naive: what a user writes first, the model's own loss on the processor's
    padding, a micro-batch at a time."""

    def __init__(self, s: _Loaded, seed: int):
        from lora import modeling as M
        from lora.batching import BatchLoader

        self.s, self.source = s, s.order(seed)
        self.step_amp = M.step_precision(s.model, s.train_amp)
        self.loader = None if s.loop == "naive" else BatchLoader(
            s.processor, s.utts, s.labels, s.device, budget=int(s.args.pass_seconds * 16000) or None)
        self.ahead = self._draw()

    def _draw(self) -> list[list[int]]:
        return [next(self.source) for _ in range(self.s.args.effective_batch // self.s.batch)]

    def run(self, n: int, opt) -> float:
        """``n`` optimizer steps; returns the audio seconds they trained on."""
        import torch

        from lora.train import backward_step

        s, audio = self.s, 0.0
        s.model.train()
        for _ in range(n):
            if self.loader:
                self.loader.submit(self.ahead)
            micro, self.ahead = self.ahead, self._draw()
            if self.loader:
                backward_step(s.model, self.loader.take(), sum(len(s.labels[i]) for idx in micro for i in idx),
                              s.device, self.step_amp)
            else:
                self._naive(micro)
            opt.step()
            opt.zero_grad(set_to_none=True)
            audio += sum(s.utts[i].n_samples for idx in micro for i in idx) / 16000
        if s.device.type == "cuda":
            torch.cuda.synchronize()
        return audio

    def _naive(self, micro) -> None:
        from lora.batching import collate

        s = self.s
        for idx in micro:
            batch = collate(s.processor, [s.utts[i].audio for i in idx], [s.labels[i] for i in idx])
            with s.train_amp:
                loss = s.model(**{k: v.to(s.device) for k, v in batch.items()}).loss
            (loss * len(idx) / s.args.effective_batch).backward()


def _train_phase(s: _Loaded) -> dict:
    """Speed (warm-up, then the median of ``--repeats``), memory, FLOP, and the quality check: from the same
    adapter, ``--quality-steps`` steps per data order, then the held-out loss as the runner computes it."""
    import torch
    from peft import set_peft_model_state_dict

    from lora import modeling as M
    from lora.evaluate import eval_loss
    from lora.train import seed_everything

    args, ours = s.args, s.loop != "naive"
    opt = torch.optim.AdamW(s.params, lr=1e-4)
    steps = _Steps(s, 1)
    compiled = args.compile and ours
    if compiled:
        for layer in [*s.model.get_encoder().layers, *s.model.get_decoder().layers]:
            layer.compile(dynamic=True)
    t0 = time.perf_counter()
    steps.run(1, opt)  # warm-up (and compilation)
    startup = time.perf_counter() - t0
    rates = []
    with s.mem:
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            audio = steps.run(args.steps, opt)
            rates.append(audio / (time.perf_counter() - t0))
    sizes = [u.n_samples for u in s.utts]
    flop = _flop_per_audio_second(s.model, steps.loader, next(s.order(2)), sizes, steps.step_amp, s.device) if ours \
        else None
    if args.profile and ours:
        _profile(lambda: steps.run(1, opt), f"{args.profile}.{s.loop}.txt")
    quality = []
    for seed in range(args.quality_seeds):
        set_peft_model_state_dict(s.model, s.init)
        seed_everything(seed)
        _Steps(s, 100 + seed).run(args.quality_steps, torch.optim.AdamW(s.params, lr=1e-3))
        quality.append(eval_loss(s.model, s.processor, [u.audio for u in s.held], [u.text for u in s.held], s.device,
                                 args.eval_batch_size, s.eval_amp))
    return {"rate": statistics.median(rates), "peak": s.mem.peak, "peak_above_loaded": s.mem.peak - s.loaded,
            "precision": M.precision_name(s.train_amp), "quality": quality, "flop_per_audio_s": flop,
            "quality_samples": args.quality_steps * args.effective_batch, "compiled": compiled, "startup_s": startup}


def _transcribe_phase(s: _Loaded) -> dict:
    """Real-time factor (median of ``--repeats``) and memory of transcribing the held-out clips."""
    import torch

    from lora import modeling as M
    from lora.evaluate import max_new_tokens, transcribe

    model, processor, device, amp = s.model, s.processor, s.device, s.eval_amp

    def naive(clips) -> list[str]:  # generate, one clip at a time
        out = []
        for a in clips:
            with torch.no_grad(), amp:
                ids = model.generate(input_values=torch.from_numpy(a)[None].to(device),
                                     max_new_tokens=max_new_tokens(a.size / 16000))
            out.append(processor.tokenizer.decode(ids[0], skip_special_tokens=True).strip())
        return out

    def ours(clips) -> list[str]:
        return transcribe(model, processor, clips, device, s.args.eval_batch_size, autocast=amp)

    fn = naive if s.loop == "naive" else ours
    audios = [u.audio for u in s.held]
    model.eval()
    fn(audios[:2])  # warm-up
    times = []
    with s.mem:
        for _ in range(s.args.repeats):
            t0 = time.perf_counter()
            texts = fn(audios)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    return {"rtf": statistics.median(times) / (sum(a.size for a in audios) / 16000), "peak": s.mem.peak,
            "peak_above_loaded": s.mem.peak - s.loaded, "texts": texts, "refs": [u.text for u in s.held],
            "precision": M.precision_name(amp)}


def _matmul_rates(device) -> dict:
    """This device's matrix-product rate in bf16 and fp32, measured here (the ceiling the TFLOP/s lines are read
    against): 8192^3 on a GPU, 2048^3 on a CPU; the mean of 10 products after 3 warm-ups."""
    import torch

    n = 8192 if device.type == "cuda" else 2048
    out = {"shape": f"{n}x{n}x{n}", "device": __import__("lora.modeling", fromlist=["x"]).device_name(device)}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
        for _ in range(3):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(10):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        out[name] = 10 * 2 * n**3 / (time.perf_counter() - t0)
    return out


def _profile(step, path: str) -> None:
    """One training step under torch.profiler: the operators that took the most device time and host time."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        step()
    table = prof.key_averages()
    sort = "self_device_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    text = (f"by {sort}:\n{table.table(sort_by=sort, row_limit=30)}\n\nby self_cpu_time_total:\n"
            f"{table.table(sort_by='self_cpu_time_total', row_limit=30)}\n")
    Path(path).write_text(text, encoding="utf-8")


def _flop_per_audio_second(model, loader, idx, sizes, amp, device) -> float:
    """FLOP of one of our training batches (the runner's step: forward and backward, torch.utils.flop_counter) per
    second of its audio."""
    from torch.utils.flop_counter import FlopCounterMode

    from lora.train import backward_step

    model.train()
    with FlopCounterMode(display=False) as counter:
        backward_step(model, [loader.prepare(idx)], 1, device, amp)
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / (sum(sizes[i] for i in idx) / 16000)


def _scaling_phase(args, model, processor, utts, labels, params, device) -> dict:
    """Our fp32 loop on ``WORLD_SIZE`` ranks (one thread each): global audio-seconds per second, from rank 0.

    The same global batches whatever the number of ranks (:mod:`lora.distributed`): each rank takes
    its share of every micro-batch (:func:`lora.train.backward_step`), gradients are summed once per step.
    """
    import random

    import torch

    from lora import distributed
    from lora.batching import BatchLoader, bucketed_batches
    from lora.train import backward_step

    torch.set_num_threads(1)
    dist = distributed.init(device.type)
    loader = BatchLoader(processor, utts, labels, device, dist.share, background=False)
    opt = torch.optim.AdamW(params, lr=1e-4)
    order = random.Random(1)
    pending: list[list[int]] = []

    def step() -> float:
        nonlocal pending
        micro = []
        for _ in range(args.effective_batch // args.batch_size):
            if not pending:
                pending = bucketed_batches([u.audio.size for u in utts], args.batch_size, order)
            micro.append(pending.pop())
        model.train()
        loader.submit(micro)
        backward_step(model, loader.take(), sum(len(labels[i]) for idx in micro for i in idx), device)
        dist.sum_grads(params)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return sum(utts[i].duration for idx in micro for i in idx)

    step()  # warm-up
    rates = []
    for _ in range(args.repeats):
        dist.barrier()
        t0, audio = time.perf_counter(), 0.0
        for _ in range(args.steps):
            audio += step()
        rates.append(audio / (time.perf_counter() - t0))
    rate = dist.sum([statistics.median(rates)])[0] / dist.world  # the ranks time the same steps
    distributed.shutdown()
    if not dist.main:
        sys.exit(0)  # rank 0 answers for the job
    return {"rate": rate, "ranks": dist.world}


if __name__ == "__main__":
    sys.exit(cli_main(main))
