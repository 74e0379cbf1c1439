"""One bench loop in this process (``python -m lora.bench --phase KIND:LOOP``): load, warm up, time, measure.

:mod:`lora.bench` (its ``__main__``) runs each phase in a fresh process and compares them; the peers' loops are in
:mod:`lora.bench.peers`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path


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


def run_phase(args) -> dict:
    """One loop in this (fresh) process: returns its timing, memory and outputs."""
    import random

    import torch

    from lora.data.run_data import resolve_source
    from lora.data.sources import load_source
    from lora.errors import ModelError
    from lora.model.device import resolve_device
    from lora.model.precision import autocast, train_autocast
    from lora.model.seed import seed_everything

    kind, loop = args.phase.split(":")
    seed_everything(0)
    device = resolve_device(args.device)
    if kind == "peak":
        return _matmul_rates(device)
    if kind == "scale" and device.type == "cuda" and torch.cuda.device_count() < int(loop):
        return {"skipped": f"{loop} ranks need {loop} GPUs; this machine has {torch.cuda.device_count()}"}
    try:
        train_amp = train_autocast(device, "bf16" if loop.endswith("bf16") else "fp32")
    except ModelError as exc:
        return {"skipped": str(exc)}
    # quality: fp32 as the runner
    eval_amp = train_amp if (kind, loop) == ("transcribe", "ours-bf16") else autocast(device)
    utts = list(load_source(resolve_source(args.source), n=args.utterances + args.transcribe_utterances))
    random.Random(0).shuffle(utts)
    held, utts = utts[: args.transcribe_utterances], utts[args.transcribe_utterances:]
    if loop == "runtime":
        from lora.bench.peers import runtime_transcription

        return {**runtime_transcription(args.model, held), "refs": [u.text for u in held]}
    s = _Loaded.load(args, device, loop, utts, held, train_amp, eval_amp)
    if kind == "scale":
        return _scaling_phase(args, s.model, s.processor, utts, s.labels, s.params, device)
    if kind == "train" and loop.startswith("hf-trainer"):
        from lora.bench.peers import trainer_phase

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

        from lora.data.batching import encode_labels
        from lora.model.adapter import attach_lora, target_regex
        from lora.model.attention import use_aligned_attention
        from lora.model.load import load_model, load_processor, resolve_model

        path = resolve_model(args.model, log=lambda _: None)
        processor = load_processor(path)
        base = load_model(path)
        model = attach_lora(base, 16, 32, 0.0, target_regex(base)).to(device)
        if loop.startswith("ours") and not args.plain_attention:
            use_aligned_attention(model, device)  # as the runner; the peers run attention as a user would
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

        from lora.data.batching import bucketed_batches

        r = random.Random(seed)
        while True:
            if self.batch == 1:
                yield from ([i] for i in r.sample(range(len(self.utts)), len(self.utts)))
            else:
                yield from bucketed_batches([u.n_samples for u in self.utts], self.batch, r)


class _Steps:
    """Optimizer steps of one training loop over one data order. Ours: the runner's step
    (:func:`lora.training.loop.backward_step` on :class:`lora.data.batching.BatchLoader` batches, the next step
    submitted first, as the runner does). Naive: what a user writes first, the model's own loss on the processor's
    padding, a micro-batch at a time."""

    def __init__(self, s: _Loaded, seed: int):
        from lora.data.batching import BatchLoader
        from lora.model.precision import step_precision

        self.s, self.source = s, s.order(seed)
        self.step_amp = step_precision(s.model, s.train_amp)
        self.loader = None if s.loop == "naive" else BatchLoader(
            s.processor, s.utts, s.labels, s.device, budget=int(s.args.pass_seconds * 16000) or None)
        self.ahead = self._draw()

    def _draw(self) -> list[list[int]]:
        return [next(self.source) for _ in range(self.s.args.effective_batch // self.s.batch)]

    def run(self, n: int, opt) -> float:
        """``n`` optimizer steps; returns the audio seconds they trained on."""
        import torch

        from lora.training.loop import backward_step

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
        from lora.data.batching import collate

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

    from lora.evaluation.evaluate import EvalContext, eval_loss
    from lora.model.precision import precision_name
    from lora.model.seed import seed_everything

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
        quality.append(eval_loss(s.model, EvalContext(s.processor, s.device, args.eval_batch_size, autocast=s.eval_amp),
                                 [u.audio for u in s.held], [u.text for u in s.held]))
    return {"rate": statistics.median(rates), "peak": s.mem.peak, "peak_above_loaded": s.mem.peak - s.loaded,
            "precision": precision_name(s.train_amp), "quality": quality, "flop_per_audio_s": flop,
            "quality_samples": args.quality_steps * args.effective_batch, "compiled": compiled, "startup_s": startup}


def _transcribe_phase(s: _Loaded) -> dict:
    """Real-time factor (median of ``--repeats``) and memory of transcribing the held-out clips."""
    import torch

    from lora.evaluation.evaluate import EvalContext, max_new_tokens, transcribe
    from lora.model.precision import precision_name

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
        return transcribe(model, EvalContext(processor, device, s.args.eval_batch_size, autocast=amp), clips)

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
            "precision": precision_name(amp)}


def _matmul_rates(device) -> dict:
    """This device's matrix-product rate in bf16 and fp32, measured here (the ceiling the TFLOP/s lines are read
    against): 8192^3 on a GPU, 2048^3 on a CPU; the mean of 10 products after 3 warm-ups. bf16 is not measured on
    a CPU without bf16 units: its fallback kernel takes minutes for these products, and no loop here trains in it."""
    import torch

    from lora.model.device import device_name
    from lora.model.precision import cpu_has_bf16_units

    n = 8192 if device.type == "cuda" else 2048
    out = {"shape": f"{n}x{n}x{n}", "device": device_name(device), "bf16": None}
    dtypes = {"bf16": torch.bfloat16, "fp32": torch.float32}
    if device.type == "cpu" and not cpu_has_bf16_units():
        del dtypes["bf16"]
    for name, dtype in dtypes.items():
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

    from lora.training.loop import backward_step

    model.train()
    with FlopCounterMode(display=False) as counter:
        backward_step(model, [loader.prepare(idx)], 1, device, amp)
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / (sum(sizes[i] for i in idx) / 16000)


def _scaling_phase(args, model, processor, utts, labels, params, device) -> dict:
    """Our fp32 loop on ``WORLD_SIZE`` ranks (one thread each): global audio-seconds per second, from rank 0.

    The same global batches whatever the number of ranks (:mod:`lora.training.distributed`): each rank takes
    its share of every micro-batch (:func:`lora.training.loop.backward_step`), gradients are summed once per step.
    """
    import random

    import torch

    from lora.data.batching import BatchLoader, bucketed_batches
    from lora.training import distributed
    from lora.training.loop import backward_step

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

