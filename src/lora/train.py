"""The training loop: AdamW, warmup + cosine decay, clipping, accumulation, early stopping.

Read it top to bottom: one function, one loop. Validation loss is checked every
``eval_every`` steps; the adapter weights of the best check (step 0, the untouched model,
included) are restored at the end, so a run can never end worse than its best check.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lora.batching import bucketed_batches, collate, encode_labels
from lora.config import RunConfig
from lora.evaluate import eval_loss


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


def seed_everything(seed: int) -> None:
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(model, processor, train_set, val_set, cfg: RunConfig, device, log_path: Path, autocast=None,
          monitor=None) -> TrainResult:
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from tqdm import tqdm
    from transformers import get_cosine_schedule_with_warmup

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    sched = get_cosine_schedule_with_warmup(opt, cfg.warmup_steps, cfg.max_steps)
    audios = [u.audio for u in train_set]
    labels = [encode_labels(processor.tokenizer, u.text) for u in train_set]
    val_audio, val_text = [u.audio for u in val_set], [u.text for u in val_set]
    rng = random.Random(cfg.seed)
    batches: list[list[int]] = []
    amp = autocast or contextlib.nullcontext()
    watch = monitor.watch if monitor else contextlib.nullcontext

    def validate(step: int) -> float:
        with watch():
            return eval_loss(model, processor, val_audio, val_text, device, cfg.eval_batch_size, autocast)

    best_loss, best_step, best_state = validate(0), 0, get_peft_model_state_dict(model)
    evals = [{"step": 0, "eval_loss": best_loss}]
    bad, seen, loss_ema, stopped = 0, 0, math.nan, False
    t_start = time.perf_counter()
    log = log_path.open("w", encoding="utf-8")
    bar = tqdm(range(1, cfg.max_steps + 1), desc="train", dynamic_ncols=True)
    step = 0
    for step in bar:
        t0 = time.perf_counter()
        model.train()
        step_loss = 0.0
        with watch():
            for _ in range(cfg.grad_accum):
                if not batches:
                    batches = bucketed_batches([a.size for a in audios], cfg.batch_size, rng)
                idx = batches.pop()
                batch = collate(processor, [audios[i] for i in idx], [labels[i] for i in idx])
                with amp:
                    loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
                (loss / cfg.grad_accum).backward()
                step_loss += loss.item() / cfg.grad_accum
                seen += len(idx)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        loss_ema = step_loss if math.isnan(loss_ema) else 0.9 * loss_ema + 0.1 * step_loss
        if not math.isfinite(step_loss):
            raise FloatingPointError(f"training loss became {step_loss} at step {step}; lower --learning-rate")
        row = {"step": step, "train_loss": step_loss, "lr": sched.get_last_lr()[0], "grad_norm": grad_norm,
               "step_seconds": dt, "samples_seen": seen}
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            row["eval_loss"] = validate(step)
            evals.append({"step": step, "eval_loss": row["eval_loss"]})
            if row["eval_loss"] < best_loss:
                best_loss, best_step, bad = row["eval_loss"], step, 0
                best_state = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}
            else:
                bad += 1
        log.write(json.dumps(row) + "\n")
        log.flush()
        bar.set_postfix(loss=f"{loss_ema:.3f}", eval=f"{best_loss:.3f}", s_per_step=f"{dt:.2f}")
        if cfg.patience and bad >= cfg.patience:
            stopped = True
            break
    bar.close()
    log.close()
    set_peft_model_state_dict(model, best_state)
    return TrainResult(steps=step, best_step=best_step, best_eval_loss=best_loss, final_train_loss=loss_ema,
                       stopped_early=stopped, seconds=time.perf_counter() - t_start, samples_seen=seen, evals=evals)
