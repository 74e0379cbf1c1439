"""The training loop: AdamW, warmup + cosine decay, clipping, accumulation, early stopping.

Read it top to bottom: one function, one loop. Validation loss is checked every
``eval_every`` steps; the adapter weights of the best check (step 0, the untouched model,
included) are restored at the end, so a run can never end worse than its best check. With
``average_steps`` the checks measure, and the run keeps, a moving average of the adapter
(:mod:`lora.training.average`) instead of its weights of the moment.
With ``checkpoints``, the loop saves every ``save_every`` steps and on Ctrl-C or SIGTERM, and continues
from the latest checkpoint when one exists (same batches, same RNG draws, same result).

The loss of an optimizer step is the cross-entropy summed over every target token of its
``grad_accum`` micro-batches, divided by their token count: each token weighs the same, however
the clips are batched or, under ``torchrun``, shared among ranks (:mod:`lora.training.distributed`).
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lora.config import RunConfig, pass_budget, quiet_per_batch, replay_per_batch
from lora.data.batching import Batch, BatchLoader, bucketed_batches, encode_labels
from lora.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, LoraError, RunInterrupted
from lora.evaluation.evaluate import Clips, EvalContext, eval_loss
from lora.model.encoder import key_mask
from lora.model.family import family_of
from lora.model.loss import token_cross_entropy
from lora.model.precision import step_precision
from lora.storage.atomic import writing
from lora.training.average import WeightAverage
from lora.training.checkpoint import Checkpoints, LoopState
from lora.training.distributed import SINGLE
from lora.training.masking import TimeMask


@dataclass
class TrainResult:
    steps: int
    best_step: int
    best_eval_loss: float
    final_train_loss: float
    stopped_early: bool
    seconds: float
    samples_seen: int
    evals: list[dict] = field(default_factory=list)


def backward_step(model, batches: Iterable[Batch], tokens: int, device, amp=None,
                  mask: TimeMask | None = None) -> torch.Tensor:
    """Backward passes of one optimizer step over this rank's prepared batches
    (:class:`lora.data.batching.BatchLoader`); ``tokens`` counts the target tokens of the whole step, over every rank,
    so each weighs the same. ``mask``: time masks for the user's clips (:mod:`lora.training.masking`).

    Returns this rank's part of the step loss as a device tensor: read it once per step (reading it after each
    batch would make the host wait for the device); the caller sums gradients (and the loss) over ranks.
    """
    amp = amp or contextlib.nullcontext()
    total = torch.zeros((), device=device)
    encode_padded = family_of(model).encoder().encode_padded
    for batch in batches:
        drop = mask.draw(model, batch.values, batch.samples, batch.clips) if mask else None
        with amp:
            enc = encode_padded(model, *batch.to(device), drop=drop)
            enc.attention_mask = key_mask(model, enc.attention_mask)  # the decoder's, read without a synchronisation
            loss = token_cross_entropy(model, enc, batch.labels)[0] / tokens
        loss.backward()
        total += loss.detach()
    return total


def plan_step(st: LoopState, sizes: list[int], own: int, cfg: RunConfig, pools: dict[str, tuple[range, int]],
              rng: random.Random) -> list[list[int]]:
    """The global micro-batches of the next optimizer step (the same on every rank): length-bucketed batches of the
    user's clips, each topped up from every pool (``name: (clip indices, clips per micro-batch)``: replay, then quiet);
    ``st`` keeps what is left of the epoch and of each pool's pass."""
    micro = []
    per_batch = cfg.batch_size - sum(n for _, n in pools.values())
    for _ in range(cfg.grad_accum):
        if not st.batches:
            st.batches = bucketed_batches(sizes[:own], per_batch, rng)
        micro.append(st.batches.pop())
        for name, (indices, n) in pools.items():
            for _ in range(n):
                if not getattr(st, name):
                    setattr(st, name, rng.sample(indices, len(indices)))
                micro[-1].append(getattr(st, name).pop())
    return micro


class _NoLog:
    """The training log of a rank that does not write (only rank 0 does)."""

    def writelines(self, lines) -> None:
        pass

    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass


class Progress:
    """A progress bar where a person watches a terminal; in a log file, one plain line every ``every`` steps
    (a cluster job's log is not a terminal, and a redrawn bar there is thousands of carriage returns)."""

    def __init__(self, start: int, total: int, enabled: bool = True, every: int | None = None):
        import sys

        from tqdm import tqdm

        self.total, self.enabled = total, enabled
        self.tty = enabled and sys.stderr.isatty()
        self.every = every or max(1, total // 20)
        self.bar = tqdm(total=total, initial=start, desc="train", dynamic_ncols=True) if self.tty else None

    def update(self, step: int, loss: float, best: float, seconds: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.3f}", eval=f"{best:.3f}", s_per_step=f"{seconds:.2f}")
        elif self.enabled and (step % self.every == 0 or step == self.total):
            print(f"train: step {step}/{self.total}, loss {loss:.4f}, best eval loss {best:.4f}, {seconds:.2f} s/step",
                  flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _StopOnSignal:
    """Ctrl-C (SIGINT) and SIGTERM (a scheduler's preemption or ``scancel``; torchrun passes either on to every
    rank) ask the loop to stop after the current step and save, instead of killing it mid-step.

    A second Ctrl-C aborts at once, in one process. Under torchrun a rank gets Ctrl-C twice (from the terminal and
    from torchrun), and SLURM may send SIGTERM to every process while torchrun forwards its own: a repeated signal
    there does not abort (torchrun kills what still runs 30 s after it passed the signal on).
    """

    def __init__(self, abort_on_second: bool = True):
        self.abort_on_second = abort_on_second

    def __enter__(self):
        import signal
        import threading

        self.requested, self._old = None, {}
        if threading.current_thread() is threading.main_thread():
            self._old = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, frame):
        import signal

        if self.requested is None:
            self.requested = signum
            print(f"\n{'SIGTERM' if signum == signal.SIGTERM else 'interrupt'}: finishing this step and saving a "
                  f"checkpoint{' (Ctrl-C again to abort)' if self.abort_on_second else ''}", flush=True)
        elif signum == signal.SIGINT and self.abort_on_second:
            raise KeyboardInterrupt

    @property
    def flags(self) -> list[float]:
        """[stop requested, by SIGTERM], to be summed over ranks so that every rank stops at the same step."""
        import signal

        return [float(self.requested is not None), float(self.requested == signal.SIGTERM)]

    def __exit__(self, *exc):
        import signal

        for sig, old in self._old.items():
            signal.signal(sig, old)


def logged_rows(path: Path, upto: int) -> list[str]:
    """The rows of steps up to ``upto`` in an earlier attempt's training log (resuming).

    A last line torn by a crash (killed while writing it) is dropped with a warning; a damaged line before the last
    is an error naming it.
    """
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    rows = []
    for n, line in enumerate(lines, 1):
        try:
            step = int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            if n < len(lines):
                raise LoraError(f"{path}:{n}: not a row of the training log (the file was edited or damaged); "
                                "delete that line to resume, or pass --force to start the run over") from None
            print(f"warning: {path}:{n}: dropped a torn last line (the run stopped while writing it)", flush=True)
            break
        if step <= upto:
            rows.append(line)
    return rows


GUARD_KEYS = ("canary_wer", "canary_clip_errors", "quiet_words")  # what a check adds with a guard


class _Validation:
    """Validation checks: the held-out loss (and with ``guard`` the canaries' WER), and the best check's adapter.

    A check becomes the best when its loss is lower than the best's and (with ``guard``) no canary's clips show a
    regression beyond the bound (:meth:`lora.evaluation.cost.Guard.within`); the adapter of the best check (step 0,
    the untouched model, included) is what the run keeps. The canaries are transcribed at step 0 and at the checks
    whose loss is the lowest so far, the only ones the guard can veto (on a CPU a transcription of the slices costs
    about as much as a few training steps). With ``average`` every check is of the averaged adapter.
    """

    def __init__(self, model, ctx: EvalContext, val_set, guard, watch, average: WeightAverage | None):
        self.model, self.ctx = model, ctx
        self.audio, self.texts = Clips(val_set), [u.text for u in val_set]
        self.guard, self.watch, self.average = guard, watch, average

    def measure(self, best_loss: float | None = None) -> dict:
        """The loss, and (with a guard) the canaries' WER unless the loss is not below ``best_loss``."""
        with self.watch():
            row = {"eval_loss": eval_loss(self.model, self.ctx, self.audio, self.texts)}
            if self.guard and (best_loss is None or row["eval_loss"] < best_loss):
                row.update(self.guard.measure(self.model))
        return row

    def start(self, st: LoopState) -> dict:
        """The check at step 0; returns the untouched adapter as the best so far."""
        st.evals = [{"step": 0, **self.measure()}]
        st.best_loss = st.evals[0]["eval_loss"]
        return _adapter_copy(self.model)

    def check(self, st: LoopState, step: int, row: dict, best_state: dict) -> dict:
        """A check at ``step``: adds its measures to ``row`` and ``st.evals``; returns the best adapter so far."""
        with self.average.swapped_in() if self.average else contextlib.nullcontext():
            row.update(self.measure(st.best_loss))
            if "canary_clip_errors" in row:
                row["within_bound"] = self.guard.within(st.evals[0], row)
            st.evals.append({"step": step, **{k: row[k] for k in ("eval_loss", *GUARD_KEYS, "within_bound")
                                              if k in row}})
            if row["eval_loss"] < st.best_loss and row.get("within_bound", True):
                st.best_loss, st.best_step, st.bad = row["eval_loss"], step, 0
                return _adapter_copy(self.model)
        st.bad += 1
        return best_state


def _adapter_copy(model) -> dict:
    """The adapter's weights as they are now: a copy, since the optimizer updates the live tensors in place (PEFT's
    state dict holds those very tensors)."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}


def _resume_or_start(params, opt, sched, rng, checkpoints, validation: _Validation):
    """(loop state, best adapter): from the latest checkpoint, or fresh with rank 0's initial adapter on every rank;
    either way every rank must hold the same step and adapter."""
    dist = validation.ctx.dist or SINGLE
    restored = checkpoints.load_latest(validation.model, opt, sched, rng, validation.average) if checkpoints else None
    if not restored:
        dist.broadcast(params)  # rank 0's initial adapter on every rank: initialisation cannot differ
        if validation.average:
            validation.average.reset()
    dist.agree({"the resume step": restored[0].step if restored else 0, "the adapter weights": params},
               "every rank must resume from the same checkpoint: put --output-dir on a file system every machine sees")
    if restored:
        if dist.main:
            print(f"resume: continuing from the checkpoint at step {restored[0].step}", flush=True)
        return restored
    st = LoopState()
    return st, validation.start(st)


def _pools(cfg: RunConfig, own: int, replay: int, quiet: int) -> dict[str, tuple[range, int]]:
    """:func:`plan_step`'s pools: the indices of the replay and quiet clips behind the user's ``own``, and how many
    of each a micro-batch takes."""
    return {name: (range(start, start + count), n) for name, start, count, n in (
        ("replay", own, replay, replay_per_batch(cfg)), ("quiet", own + replay, quiet, quiet_per_batch(cfg)))
        if count and n}


def _stop_line(step: int, terminated: bool) -> RunInterrupted:
    return RunInterrupted(f"{'terminated (SIGTERM)' if terminated else 'interrupted'} at step {step}; "
                          "checkpoint saved. Rerun the same command to resume",
                          EXIT_TERMINATED if terminated else EXIT_INTERRUPTED)


def train(model, ctx: EvalContext, train_set, val_set, cfg: RunConfig, log_path: Path, *, monitor=None,
          checkpoints: Checkpoints | None = None, progress: bool = True, train_autocast=None, tracker=None, replay=(),
          quiet=(), guard=None) -> TrainResult:
    """``ctx``: processor, device, ranks, validation precision; ``train_autocast``: the steps' (default the same).
    ``replay``: general-speech clips, :func:`lora.config.replay_per_batch` of them in every micro-batch; ``quiet``:
    clips without speech and with an empty transcript, :func:`lora.config.quiet_per_batch` of them.
    ``guard`` (:class:`lora.evaluation.cost.Guard`): at a check whose loss is the lowest so far the canaries' WER is
    measured too; one whose canary clips show a regression past the bound cannot become the kept adapter.
    Under ``ctx.dist`` every rank runs this same loop on its share of each micro-batch; only rank 0
    writes the log, checkpoints and ``tracker`` (TensorBoard) and shows progress."""
    from peft import set_peft_model_state_dict
    from transformers import get_cosine_schedule_with_warmup

    processor, device, dist, autocast = ctx.processor, ctx.device, ctx.dist or SINGLE, ctx.autocast
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    sched = get_cosine_schedule_with_warmup(opt, cfg.warmup_steps, cfg.max_steps)
    replay, quiet, own = list(replay), list(quiet), len(train_set)
    clips = list(train_set) + replay + quiet  # replay clips are indices own.., then the quiet ones
    pools = _pools(cfg, own, len(replay), len(quiet))
    sizes = [u.n_samples for u in clips]  # the audio itself is read batch by batch (it may live on disk)
    labels = [encode_labels(processor.tokenizer, u.text) for u in clips]
    rng = random.Random(cfg.seed)
    amp = step_precision(model, train_autocast or autocast or contextlib.nullcontext())
    watch = monitor.watch if monitor else contextlib.nullcontext
    average = WeightAverage(params, cfg.average_steps, opt) if cfg.average_steps else None  # updated after opt.step()
    validation = _Validation(model, ctx, val_set, guard, watch, average)
    st, best_state = _resume_or_start(params, opt, sched, rng, checkpoints, validation)
    old_rows = logged_rows(log_path, st.step) if st.step and dist.main else []
    t_start, stopped = time.perf_counter(), False
    shown = Progress(st.step, cfg.max_steps, enabled=progress and dist.main)
    loader = BatchLoader(processor, clips, labels, device, dist.share, *pass_budget(cfg, device, dist.world))
    with (writing(log_path, "the training log"), log_path.open("w", encoding="utf-8") if dist.main else
          contextlib.nullcontext(_NoLog()) as log, _StopOnSignal(abort_on_second=not dist.active) as stop, loader):
        log.writelines(r + "\n" for r in old_rows)
        ahead = st.ahead or plan_step(st, sizes, own, cfg, pools, rng)  # the next step's, planned one step early
        loader.submit(ahead)
        for step in range(st.step + 1, cfg.max_steps + 1):
            t0 = time.perf_counter()
            model.train()
            micro = ahead  # the step's global micro-batches, the same on every rank
            if step < cfg.max_steps:  # prepared in the background while this step runs
                st.ahead = ahead = plan_step(st, sizes, own, cfg, pools, rng)
                loader.submit(ahead)
            with watch():
                tokens = sum(len(labels[i]) for idx in micro for i in idx)
                step_loss = float(backward_step(model, loader.take(), tokens, device, amp, TimeMask.of(cfg, step, own)))
                dist.sum_grads(params)
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
            step_loss, interrupt, terminated = dist.sum([step_loss, *stop.flags])
            if not math.isfinite(step_loss):
                raise FloatingPointError(f"training loss became {step_loss} at step {step}; lower --learning-rate")
            st.step, st.seen, dt = step, st.seen + sum(len(idx) for idx in micro), time.perf_counter() - t0
            st.loss_ema = step_loss if math.isnan(st.loss_ema) else 0.9 * st.loss_ema + 0.1 * step_loss
            audio = sum(sizes[i] for idx in micro for i in idx) / 16000
            row = {"step": step, "train_loss": step_loss, "lr": sched.get_last_lr()[0], "grad_norm": grad_norm,
                   "step_seconds": dt, "samples_seen": st.seen, "audio_seconds_per_second": audio / dt}
            if step % cfg.eval_every == 0 or step == cfg.max_steps:
                best_state = validation.check(st, step, row, best_state)
            log.write(json.dumps(row) + "\n")
            log.flush()
            if tracker:
                tracker.step(row)
            shown.update(step, st.loss_ema, st.best_loss, dt)
            stopped = bool(cfg.patience and st.bad >= cfg.patience)
            if checkpoints and dist.main and (interrupt or (cfg.save_every and step % cfg.save_every == 0)):
                checkpoints.save(st, model, best_state, opt, sched, rng, average)
            if interrupt:
                dist.barrier()  # the checkpoint is on disk before any rank says so
                raise _stop_line(step, terminated)
            if stopped:
                break
    shown.close()
    set_peft_model_state_dict(model, best_state)
    return TrainResult(steps=st.step, best_step=st.best_step, best_eval_loss=st.best_loss, final_train_loss=st.loss_ema,
                       stopped_early=stopped, seconds=time.perf_counter() - t_start, samples_seen=st.seen,
                       evals=st.evals)
