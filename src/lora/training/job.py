"""The main job, step by step: data -> baseline -> LoRA training -> tuned -> artifacts.

Called by ``python -m lora.runners.real_small`` once its flags are parsed into a RunConfig.
"""

from __future__ import annotations

import contextlib
import platform
import shutil
import time
from pathlib import Path

from lora.config import RunConfig
from lora.data.manifest import write_manifest
from lora.data.run_data import prepare_data, prepare_general
from lora.data.sources import read_manifest
from lora.errors import LoraError
from lora.storage import artifacts as R
from lora.storage.atomic import atomic_dir, write_json, write_jsonl


def bytes_needed(model, pattern: str, cfg: RunConfig) -> int:
    """Disk the rest of a run writes: checkpoints and final artifacts, with a margin.

    A checkpoint holds the adapter, the best adapter and AdamW's two moments (4x the adapter);
    ``keep + 1`` exist while the newest is written. Artifacts: the adapter, the processor
    (its tokenizer is ~2 MB), predictions and logs. Plus 20%.
    """
    import re

    import torch

    params = sum(cfg.lora_r * (m.in_features + m.out_features) for name, m in model.named_modules()
                 if isinstance(m, torch.nn.Linear) and re.fullmatch(pattern, name))
    adapter = 4 * params
    checkpoints = (cfg.keep_checkpoints + 1) * 4 * adapter  # save_every 0 still saves one on Ctrl-C
    return int(1.2 * (checkpoints + adapter + 5_000_000))


def check_space(out: Path, need: int) -> None:
    from lora.storage.atomic import StorageError

    free = shutil.disk_usage(out).free
    if free < need:
        raise StorageError(f"--output-dir {out} has {free / 1e6:.1f} MB free, but this run will write about "
                           f"{need / 1e6:.1f} MB (checkpoints and artifacts); free some space there or choose "
                           "another folder")


def _versions() -> dict:
    import peft
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__}


def _predictions(utts, hyps) -> list[dict]:
    return [{"id": u.id, "reference": u.text, "prediction": h} for u, h in zip(utts, hyps, strict=True)]


def _resumable(out: Path, cfg: RunConfig, force: bool, resume: bool) -> bool:
    """True if ``out`` holds an unfinished run of this same config (rerun = resume)."""
    saved = out / R.RUN_CONFIG
    if force or not saved.is_file():
        if resume:
            raise LoraError(f"--resume: {out} holds no unfinished run to resume")
        return False
    old = R.read_json(saved)
    diff = sorted(k for k, v in cfg.to_dict().items() if k != "output_dir" and old.get(k) != v)
    if diff:
        raise LoraError(f"--output-dir {out} holds a different unfinished run (differs in: {', '.join(diff)}); "
                        "rerun with the same flags to resume, pass --force to start over, or choose another folder")
    return True


def run(cfg: RunConfig, force: bool = False, command: str = "", log=print, resume: bool = False,
        progress: bool = True, report_to: str = "none", dist_timeout: float | None = None) -> dict | None:
    """The whole job, holding ``--output-dir``'s lock: a second run on the same folder is refused at once.

    Under ``torchrun`` every rank runs it (:mod:`lora.training.distributed`); rank 0 holds the lock, writes
    everything and returns the metrics, the other ranks return None.
    """
    from lora.model.device import resolve_device
    from lora.storage.lock import FolderLock
    from lora.training import distributed

    if report_to not in REPORT_TO:
        raise LoraError(f"unknown --report-to '{report_to}'; valid: {', '.join(REPORT_TO)}")
    device = resolve_device(cfg.device)
    dist = distributed.init(device.type, dist_timeout or distributed.DEFAULT_TIMEOUT)
    try:
        with FolderLock(cfg.output_dir, "--output-dir") if dist.main else contextlib.nullcontext():
            return _run(cfg, force, command, log if dist.main else _quiet, resume, progress, report_to, dist, device)
    finally:
        distributed.shutdown()


REPORT_TO = ("none", "tensorboard")


def _quiet(msg: str) -> None:
    pass


def _run(cfg: RunConfig, force: bool, command: str, log, resume: bool, progress: bool, report_to: str, dist,
         device) -> dict:
    from lora.data.store import AudioStore
    from lora.model.load import cache_root

    out = Path(cfg.output_dir)
    resuming = None
    if dist.main:
        R.check_output_dir(out, force)
        resuming = _resumable(out, cfg, force, resume)
    resuming = dist.gather(resuming)[0]  # every rank follows rank 0's reading of the folder
    with AudioStore(cache_root() / "audio-store") as store:  # decoded clips on disk, deleted when the run ends
        return _run_with_store(cfg, out, force, command, log, resuming, progress, store, report_to, dist, device)


def _run_with_store(cfg: RunConfig, out: Path, force: bool, command: str, log, resuming: bool, progress: bool,
                    store, report_to: str, dist, device) -> dict | None:
    import dataclasses

    from lora.config import scaled_schedule
    from lora.data.store import keep_on_disk
    from lora.evaluation.cost import Guard, cost_summary, measure_canaries, measure_quiet
    from lora.evaluation.evaluate import Clips, eval_loss, evaluate, wer_metrics
    from lora.model.adapter import attach_lora, parameter_counts, target_regex
    from lora.model.attention import use_aligned_attention
    from lora.model.device import FallbackMonitor, device_name
    from lora.model.load import load_model, load_processor, resolve_model
    from lora.model.precision import autocast, precision_name, train_autocast
    from lora.training.checkpoint import Checkpoints
    from lora.training.loop import seed_everything, train
    from lora.training.tracking import open_tracker

    t_start = time.perf_counter()
    seed_everything(cfg.seed)
    monitor = FallbackMonitor(device, strict=cfg.require_device)
    amp = autocast(device)
    train_amp = train_autocast(device, cfg.precision)  # an unusable --precision fails before any work
    if dist.active:
        log(f"distributed: {dist.world} ranks ({dist.backend}); every rank forms the "
            f"same global batches of {cfg.batch_size} x {cfg.grad_accum} clips and takes its share of each")

    # 1. data and model; everything that can be refused is refused before the first file is written
    with dist.main_first():  # rank 0 first: the shipped corpora are synthesized/imported and the model imported once
        data = prepare_data(cfg, log, store)
        general = prepare_general(cfg, data, log, store)
        resolve_model(cfg.model, log)
    split = data.split
    train_set = split.parts["train"]
    scaled = scaled_schedule(cfg, len(train_set)) if None in (cfg.max_steps, cfg.eval_every, cfg.warmup_steps,
                                                              cfg.save_every) else {}
    if scaled:
        log(f"schedule: scaled to {len(train_set)} training clips: " + ", ".join(f"{k} {v}" for k, v in scaled.items()))
    run_cfg = dataclasses.replace(cfg, **scaled)  # what actually runs; cfg (as given) decides resuming
    model_path = resolve_model(cfg.model, log)
    processor = load_processor(model_path)
    model = load_model(model_path).to(device)
    use_aligned_attention(model, device)  # on CUDA: fused attention kernels for base-en's 52-wide heads
    log(f"model: {cfg.model} ({model_path}) on {device_name(device)}")
    modules = tuple(m.strip() for m in cfg.target_modules.split(",") if m.strip())
    pattern = target_regex(model, cfg.lora_scope, modules)  # a typo fails now, not after the baseline
    audio_bytes = sum(2 * u.n_samples + 44 for u in split.parts["test"] + [u for c in general.measured for u in c.test])
    if dist.main:
        check_space(out, bytes_needed(model, pattern, run_cfg) + audio_bytes)  # not after an hour of training
    # every rank decoded its own data: the same clips everywhere, or stop before the first file is written
    dist.agree({f"the {name} clips": [(u.id, u.text, u.n_samples) for u in us] for name, us in (
        ("training", train_set), ("validation", split.parts["validation"]), ("test", split.parts["test"]),
        ("replay", general.replay.test if general.replay else []),
        ("canary", [u for c in general.canaries for u in c.test + c.val]))},
        "every rank must read the same data: give --source, --validation-source, --test-source, --replay and "
        "--canary paths that hold the same files on every machine")

    # 2. the fixed held-out manifest (the test split, real audio written as WAV), then the baseline on it
    if dist.main:
        if force:
            R.clear_run_dir(out)
        write_json(out / R.RUN_CONFIG, cfg.to_dict())
        write_json(out / R.SPLIT, {"seed": cfg.seed, "ratios": list(cfg.split_ratios), "mode": split.mode,
                                   "mode_reason": split.reason, "given": list(split.given), "text_mode": data.text_mode,
                                   "dropped_overlap": split.dropped_overlap,
                                   "dropped_same_audio": split.dropped_same_audio,
                                   "parts": {p: {"speakers": split.speakers(p), "ids": [u.id for u in us],
                                                 "sentences": split.sentences(p)} for p, us in split.parts.items()}})
        write_manifest(out / R.HELDOUT, split.parts["test"])
        for c in general.measured:  # the canaries' test clips too, for export_onnx to measure them in the runtime
            write_manifest(out / R.CANARIES / f"{c.name}.jsonl", c.test)
    dist.barrier()  # the manifest is written before any rank reads it
    test = keep_on_disk(list(read_manifest(out / R.HELDOUT)), store)  # exactly what run_stt will read back
    val = split.parts["validation"]

    def measure(tag: str) -> tuple[dict, list[str], dict]:
        """The test split, validation loss, canaries and (rank 0) quiet clips: (metrics, transcripts, the rest's)."""
        t0 = time.perf_counter()
        with monitor.watch():
            loss_val = eval_loss(model, processor, Clips(val), [u.text for u in val], device, cfg.eval_batch_size, amp,
                                 dist=dist)
            loss_test, hyps = evaluate(model, processor, Clips(test), device, texts=[u.text for u in test],
                                       batch_size=cfg.eval_batch_size, num_beams=cfg.num_beams, autocast=amp, dist=dist)
            canaries, canary_hyps = measure_canaries(model, processor, general, device, cfg.eval_batch_size, amp, dist)
            quiet = measure_quiet(model, processor, device, amp) if dist.main else {}
        m = {"eval_loss": loss_val, "test_loss": loss_test, **wer_metrics([u.text for u in test], hyps),
             "seconds": time.perf_counter() - t0}
        log(f"{tag}: eval loss {loss_val:.4f}, test loss {loss_test:.4f}, WER {m['wer']:.2%} "
            f"(raw {m['wer_raw']:.2%}), CER {m['cer']:.2%}" + "".join(
                f"; {n} WER {c['wer']:.2%}" for n, c in canaries.items()))
        return m, hyps, {"canaries": canaries, "canary_predictions": canary_hyps, "quiet": quiet}

    if dist.gather(resuming and (out / R.BASELINE).is_file())[0]:
        if dist.main:
            saved = R.read_json(out / R.BASELINE)
            baseline, cost_before = saved["metrics"], saved["cost"]
            log(f"baseline: reused from {out / R.BASELINE} (resuming)")
    else:
        baseline, base_hyps, cost_before = measure("baseline")
        if dist.main:
            write_jsonl(out / R.PRED_BASELINE, _predictions(test, base_hyps))
            write_json(out / R.BASELINE, {"metrics": baseline, "cost": cost_before})

    # 3. LoRA
    seed_everything(cfg.seed)  # LoRA init and data order must not depend on what ran before (e.g. a first import)
    model = attach_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, pattern)
    trainable, total = parameter_counts(model)
    adapted = sorted({n.split(".lora_A")[0] for n, _ in model.named_parameters() if ".lora_A" in n})
    log(f"lora: r={cfg.lora_r} alpha={cfg.lora_alpha} on {len(adapted)} layers ({cfg.lora_scope}: "
        f"{', '.join(modules)}); trainable {trainable:,} of {total:,} parameters ({trainable / total:.2%})")

    # 4. train (best validation checkpoint restored at the end)
    partial_log = out / (R.TRAIN_LOG + ".partial")
    checkpoints = Checkpoints(out / R.CHECKPOINTS, keep=cfg.keep_checkpoints)
    with open_tracker(report_to if dist.main else "none", out) as tracker:
        guard = Guard(general, processor, device, cfg.eval_batch_size, amp, cfg.max_regression, dist)
        result = train(model, processor, train_set, val, run_cfg, device, partial_log, amp, monitor, checkpoints,
                       progress, train_amp, dist=dist, tracker=tracker,
                       replay=general.replay.test if general.replay else (), guard=guard)
        if dist.main:
            partial_log.replace(out / R.TRAIN_LOG)
        log(f"train: {result.steps} steps in {result.seconds:.0f} s, best eval loss {result.best_eval_loss:.4f} "
            f"at step {result.best_step}{' (stopped early)' if result.stopped_early else ''}")
        if guard and result.best_step == 0:
            log(f"warning: no checkpoint kept the canaries within --max-regression {cfg.max_regression:g} and "
                "improved validation loss; the kept adapter is the untouched model. Add --replay, lower "
                "--learning-rate, or allow a larger --max-regression")

        # 5. tuned, on the same data, and what it cost
        tuned, tuned_hyps, cost_after = measure("tuned")
        tracker.final(tuned)
    if not dist.main:
        return None
    write_jsonl(out / R.PRED_TUNED, _predictions(test, tuned_hyps))
    cost = cost_summary(general, cost_before["canaries"], cost_after["canaries"], cost_before["quiet"],
                        cost_after["quiet"], cfg.max_regression)
    cost["guardrail"] = {"validation_clips": len(guard.clips), "kept_step": result.best_step,
                         "checks": [e for e in result.evals if "canary_wer" in e]}
    write_jsonl(out / R.PRED_CANARIES, [
        {"canary": s.name, "id": u.id, "reference": u.text, "baseline": b, "tuned": t}
        for s in general.measured for u, b, t in zip(s.test, cost_before["canary_predictions"][s.name],
                                                     cost_after["canary_predictions"][s.name], strict=True)])
    _log_cost(cost, log)

    # 6. artifacts; real_metrics.json last (the completed marker)
    with atomic_dir(out / R.ADAPTER, force=True) as tmp:
        model.save_pretrained(tmp)
    with atomic_dir(out / R.PROCESSOR, force=True) as tmp:
        processor.save_pretrained(tmp)
    metrics = {
        "status": "complete",
        "command": command,
        "config": run_cfg.to_dict(),
        "schedule_scaled": scaled,
        "model_path": model_path,
        "data": {"source": data.info.spec, "description": data.info.description, "synthesized": data.info.synthesized,
                 "text_mode": data.text_mode,
                 "screening": {"kept": len(data.screening.kept), "rejected": data.screening.rejected},
                 "split": split.summary(), "split_mode": split.mode, "split_mode_reason": split.reason,
                 "dropped_overlap": split.dropped_overlap, "dropped_same_audio": split.dropped_same_audio,
                 "held_out_sources": {p: {"source": i.spec, "description": i.description, "synthesized": i.synthesized,
                                          "screening": {"kept": len(sc.kept), "rejected": sc.rejected}}
                                      for p, (i, sc) in data.held.items()}},
        "lora": {"target_modules": pattern, "adapted_layers": len(adapted), "trainable_parameters": trainable,
                 "total_parameters": total},
        "train": {"steps": result.steps, "best_step": result.best_step, "stopped_early": result.stopped_early,
                  "train_loss": result.final_train_loss, "best_eval_loss": result.best_eval_loss,
                  "samples_seen": result.samples_seen, "seconds": result.seconds, "evals": result.evals},
        "baseline": baseline,
        "tuned": tuned,
        "general": general.summary(),
        "cost": cost,
        "device": {"type": device.type, "name": device_name(device), "train_precision": precision_name(train_amp),
                   "eval_precision": precision_name(amp), "used_mps_fallback": monitor.used_fallback,
                   "fallback_messages": monitor.messages[:5]},
        "distributed": {"world_size": dist.world, "backend": dist.backend},
        "report_to": report_to,
        "versions": _versions(),
        "git_commit": R.git_commit(),
        "elapsed_seconds": time.perf_counter() - t_start,
    }
    write_json(out / R.METRICS, metrics)
    log(f"done: artifacts in {out} ({metrics['elapsed_seconds']:.0f} s)")
    return metrics


def _log_cost(cost: dict, log) -> None:
    from lora.data.general import canary_words

    for name, c in cost["canaries"].items():
        if c["skipped"]:
            continue
        kind, judged = canary_words(c)
        log(f"cost: {name} ({kind}) WER {c['baseline']['wer']:.2%} -> {c['tuned']['wer']:.2%} "
            f"({c['regression']:+.1%} relative; {judged}, bound {cost['max_regression']:+.0%})")
    q = cost["quiet"]
    log(f"cost: clips without speech: {q['baseline_words']} words before, {q['tuned_words']} after; "
        f"{q['added_words']} added where the base model wrote none" +
        (f" ({', '.join(q['clips_with_added_words'])})" if q["added_words"] else ""))
