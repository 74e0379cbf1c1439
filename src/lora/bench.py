"""python -m lora.bench: naive loop vs the project's loop, same model, data and machine, one process.

Training: (a) naive = batch 1, gradient accumulation to the effective batch, random order;
(b) ours = ``--batch-size`` with length-bucketed batches and dynamic padding, accumulation to the
same effective batch. Transcription: (a) per-utterance ``generate``; (b) :func:`lora.evaluate.transcribe`.
Each is timed after a warm-up, ``--repeats`` times; medians are printed with peak memory above
the phase's starting point. A quality check trains both loops from the same adapter for the same
samples and compares held-out loss. The last line is the training speed-up ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import threading
import time
from collections.abc import Sequence

from lora.errors import cli_main


class PeakMemory:
    """Peak memory above the starting point: CUDA allocator stats on a GPU, sampled RSS on the CPU."""

    def __init__(self, device):
        self.device, self.peak, self._stop = device, 0, threading.Event()

    def __enter__(self):
        import psutil
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
            return self
        proc = psutil.Process()
        self.start = proc.memory_info().rss

        def sample():
            while not self._stop.wait(0.01):
                self.peak = max(self.peak, proc.memory_info().rss - self.start)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.start
        else:
            self._stop.set()
            self._thread.join()


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lora.bench", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="offline", help="base model (default offline: imported base-en)")
    p.add_argument("--source", default="synth:default", help="data source (default synth:default)")
    p.add_argument("--utterances", type=int, default=96, help="utterances drawn for training batches (default 96)")
    p.add_argument("--transcribe-utterances", type=int, default=24, help="utterances transcribed per repeat (default 24)")
    p.add_argument("--effective-batch", type=int, default=16, help="utterances per optimizer step, both loops (default 16)")
    p.add_argument("--batch-size", type=int, default=8, help="our loop's batch size (default 8)")
    p.add_argument("--steps", type=int, default=2, help="optimizer steps per timed repeat (default 2)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats; the median is reported (default 3)")
    p.add_argument("--quality-steps", type=int, default=8, help="steps for the equal-samples quality check (default 8)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"], help="default auto")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast in both loops (CUDA, or CPUs with bf16 units)")
    args = p.parse_args(argv)
    if args.effective_batch % args.batch_size:
        from lora.errors import LoraError

        raise LoraError("--effective-batch must be a multiple of --batch-size")

    import random

    import torch
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    from lora import modeling as M
    from lora.batching import bucketed_batches, collate, encode_labels
    from lora.data.sources import load_source
    from lora.evaluate import eval_loss, max_new_tokens, transcribe
    from lora.pipeline import resolve_source
    from lora.train import seed_everything

    seed_everything(0)
    device = M.resolve_device(args.device)
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if args.bf16 else contextlib.nullcontext()
    utts = list(load_source(resolve_source(args.source), n=args.utterances))
    rng = random.Random(0)
    rng.shuffle(utts)
    held, utts = utts[: args.transcribe_utterances], utts[args.transcribe_utterances:][: args.utterances]
    path = M.resolve_model(args.model)
    processor = M.load_processor(path)
    base = M.load_model(path)
    model = M.attach_lora(base, 16, 32, 0.0, M.target_regex(base)).to(device)
    init = {k: v.clone() for k, v in get_peft_model_state_dict(model).items()}
    labels = [encode_labels(processor.tokenizer, u.text) for u in utts]
    params = [q for q in model.parameters() if q.requires_grad]
    print(f"bench: {M.device_name(device)}, model {args.model}, {len(utts)} training / {len(held)} held-out clips, "
          f"effective batch {args.effective_batch}, bf16={args.bf16}", flush=True)

    def batches(bs: int, seed: int):
        r = random.Random(seed)
        while True:
            if bs == 1:
                yield from ([i] for i in r.sample(range(len(utts)), len(utts)))
            else:
                yield from bucketed_batches([u.audio.size for u in utts], bs, r)

    def train_steps(bs: int, steps: int, source, opt) -> float:
        """Run ``steps`` optimizer steps; returns audio seconds processed."""
        model.train()
        audio = 0.0
        for _ in range(steps):
            for _ in range(args.effective_batch // bs):
                idx = next(source)
                batch = {k: v.to(device) for k, v in collate(processor, [utts[i].audio for i in idx],
                                                            [labels[i] for i in idx]).items()}
                with amp:
                    loss = model(**batch).loss
                (loss * len(idx) / args.effective_batch).backward()
                audio += sum(utts[i].duration for i in idx)
            opt.step()
            opt.zero_grad(set_to_none=True)
        _sync(device)
        return audio

    def train_rate(bs: int) -> tuple[float, int]:
        set_peft_model_state_dict(model, init)
        opt = torch.optim.AdamW(params, lr=1e-4)
        source = batches(bs, 1)
        train_steps(bs, 1, source, opt)  # warm-up
        rates = []
        with PeakMemory(device) as mem:
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                audio = train_steps(bs, args.steps, source, opt)
                rates.append(audio / (time.perf_counter() - t0))
        return statistics.median(rates), mem.peak

    def naive_transcribe(audios) -> list[str]:
        out = []
        for a in audios:
            with torch.no_grad(), amp:
                ids = model.generate(input_values=torch.from_numpy(a)[None].to(device),
                                     max_new_tokens=max_new_tokens(a.size / 16000))
            out.append(processor.tokenizer.decode(ids[0], skip_special_tokens=True).strip())
        return out

    def rtf(fn) -> tuple[float, int, list[str]]:
        audios = [u.audio for u in held]
        fn(audios[:2])  # warm-up
        seconds = sum(a.size for a in audios) / 16000
        times = []
        with PeakMemory(device) as mem:
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                texts = fn(audios)
                _sync(device)
                times.append(time.perf_counter() - t0)
        return statistics.median(times) / seconds, mem.peak, texts

    mb = 2**20
    naive_rate, naive_mem = train_rate(1)
    print(f"train naive  (batch 1 x accum {args.effective_batch}): {naive_rate:7.2f} audio-s/s, peak +{naive_mem / mb:.0f} MiB", flush=True)
    fast_rate, fast_mem = train_rate(args.batch_size)
    print(f"train ours   (batch {args.batch_size} x accum {args.effective_batch // args.batch_size}, bucketed): "
          f"{fast_rate:7.2f} audio-s/s, peak +{fast_mem / mb:.0f} MiB", flush=True)
    set_peft_model_state_dict(model, init)
    naive_rtf, naive_tmem, naive_txt = rtf(naive_transcribe)
    print(f"transcribe naive (per-utterance generate): RTF {naive_rtf:.4f}, peak +{naive_tmem / mb:.0f} MiB", flush=True)
    fast_rtf, fast_tmem, fast_txt = rtf(lambda a: transcribe(model, processor, a, device, args.batch_size, autocast=amp))
    print(f"transcribe ours  (batch {args.batch_size}): RTF {fast_rtf:.4f}, peak +{fast_tmem / mb:.0f} MiB; "
          f"identical transcripts {sum(x == y for x, y in zip(naive_txt, fast_txt, strict=True))}/{len(held)}", flush=True)

    losses = {}
    for name, bs in (("naive", 1), ("ours", args.batch_size)):
        set_peft_model_state_dict(model, init)
        seed_everything(0)
        opt = torch.optim.AdamW(params, lr=1e-3)
        train_steps(bs, args.quality_steps, batches(bs, 2), opt)
        losses[name] = eval_loss(model, processor, [u.audio for u in held], [u.text for u in held], device, 8, amp)
    print(f"quality after {args.quality_steps * args.effective_batch} samples: held-out loss naive {losses['naive']:.4f}, "
          f"ours {losses['ours']:.4f}")
    print(f"ratios: transcription speed-up {naive_rtf / fast_rtf:.2f}x, training memory {fast_mem / max(naive_mem, 1):.2f}x of naive")
    print(f"training speed-up: {fast_rate / naive_rate:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
