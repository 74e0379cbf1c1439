"""The main job, step by step: data and model -> held-out plan -> baseline -> LoRA -> train -> tuned -> artifacts.

Called by ``python -m lora.runners.real_small`` once its flags are parsed into a RunConfig. :meth:`TrainingJob.run`
reads as the list of steps; each step is one method below it. Under ``torchrun`` every rank runs every step and
computes; which rank writes is decided once, by :func:`lora.training.run_folder.for_rank`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import platform
import time
from pathlib import Path

from lora.config import RunConfig
from lora.errors import LoraError
from lora.storage import artifacts as R

REPORT_TO = ("none", "tensorboard")


def run(cfg: RunConfig, force: bool = False, command: str = "", log=print, resume: bool = False,
        progress: bool = True, report_to: str = "none", dist_timeout: float | None = None) -> dict | None:
    """The whole job, holding ``--output-dir``'s lock: a second run on the same folder is refused at once.

    Under ``torchrun`` every rank runs it (:mod:`lora.training.distributed`); rank 0 holds the lock, writes
    everything and returns the metrics, the other ranks return None.
    """
    from lora.data.store import AudioStore
    from lora.model.device import resolve_device
    from lora.storage.cache import cache_root
    from lora.storage.lock import FolderLock
    from lora.training import distributed

    if report_to not in REPORT_TO:
        raise LoraError(f"unknown --report-to '{report_to}'; valid: {', '.join(REPORT_TO)}")
    device = resolve_device(cfg.device)
    dist = distributed.init(device.type, dist_timeout or distributed.DEFAULT_TIMEOUT)
    try:
        with (FolderLock(cfg.output_dir, "--output-dir") if dist.main else contextlib.nullcontext(),
              AudioStore(cache_root() / "audio-store") as store):  # decoded clips on disk, deleted at the end
            return TrainingJob(cfg, dist, device, log, store, progress, report_to).run(force, resume, command)
    finally:
        distributed.shutdown()


def _quiet(msg: str) -> None:
    pass


class TrainingJob:
    """One run of the job on one rank. ``cfg`` is the config as given (it decides resuming); ``run_cfg`` what runs
    (the personal preset's schedule scaled to the data)."""

    def __init__(self, cfg: RunConfig, dist, device, log, store, progress: bool, report_to: str):
        from lora.model.device import FallbackMonitor
        from lora.training.run_folder import for_rank

        self.cfg, self.dist, self.device, self.store = cfg, dist, device, store
        self.out = Path(cfg.output_dir)
        self.folder = for_rank(self.out, dist)  # rank 0 writes; the others' folder writes nothing
        self.log = log if dist.main else _quiet
        # the loop shows progress on rank 0
        self.progress, self.report_to = progress, report_to if dist.main else "none"
        self.t_start = time.perf_counter()
        self.monitor = FallbackMonitor(device, strict=cfg.require_device)

    def run(self, force: bool, resume: bool, command: str) -> dict | None:
        from lora.model.seed import seed_everything
        from lora.training.tracking import open_tracker

        resuming = self.dist.gather(self.folder.resuming(self.cfg, force, resume))[0]  # rank 0's reading, everywhere
        seed_everything(self.cfg.seed)
        self.load_data_and_model()  # everything that can be refused is refused before the first file is written
        self.check_ranks_agree()
        self.folder.write_plan(self.cfg, self.data, self.general, force)
        self.dist.barrier()  # the held-out manifest is written before any rank reads it
        self.read_back_test_set()
        baseline = self.baseline(resuming)
        self.attach_lora()
        with open_tracker(self.report_to, self.out) as tracker:  # TensorBoard, with --report-to tensorboard
            result, guard = self.train(tracker)
            tuned, tuned_hyps, cost_after = self.measure("tuned")
            tracker.final(tuned)
        if not self.dist.main:
            return None
        cost = self.cost(baseline["cost"], cost_after, result, guard)
        self.folder.write_tuned(self.test, tuned_hyps, self.general, baseline["cost"], cost_after)
        self.folder.write_model(self.model, self.processor)
        metrics = self.metrics(command, baseline["metrics"], tuned, result, cost)
        metrics["terms"] = self.score_terms()
        self.folder.write_metrics(metrics)  # last: it marks the run complete
        self.log(f"done: artifacts in {self.out} ({metrics['elapsed_seconds']:.0f} s)")
        return metrics

    def load_data_and_model(self) -> None:
        from lora.config import scaled_schedule
        from lora.data.run_data import prepare_data, prepare_general
        from lora.evaluation.evaluate import EvalContext
        from lora.evaluation.terms import read_terms
        from lora.model.adapter import target_regex
        from lora.model.attention import use_aligned_attention
        from lora.model.device import device_name
        from lora.model.family import family_of
        from lora.model.load import load_model, load_processor, resolve_model
        from lora.model.precision import autocast, train_autocast
        from lora.model.random_init import random_weights, weights_line
        from lora.training.run_folder import bytes_needed

        cfg, dist, log = self.cfg, self.dist, self.log
        self.amp = autocast(self.device)  # evaluation precision
        self.train_amp = train_autocast(self.device, cfg.precision)  # an unusable --precision fails before any work
        if dist.active:
            log(f"distributed: {dist.world} ranks ({dist.backend}); every rank forms the "
                f"same global batches of {cfg.batch_size} x {cfg.grad_accum} clips and takes its share of each")
        terms = read_terms(cfg.terms) if cfg.terms else None  # a missing file fails before the data is read
        # rank 0 first: the shipped corpora are synthesized/imported and the model imported once
        with dist.main_first():
            self.data = prepare_data(cfg, log, self.store)
            self.general = prepare_general(cfg, self.data, log, self.store)
            self.model_path = resolve_model(cfg.model, log)
        self.split = self.data.split
        train_set, self.val = self.split.parts["train"], self.split.parts["validation"]
        self.terms = terms_plan(cfg.terms, terms, self.split, log) if cfg.terms else None
        self.scaled = scaled_schedule(cfg, len(train_set))
        if self.scaled:
            log(f"schedule: scaled to {len(train_set)} training clips: " +
                ", ".join(f"{k} {v}" for k, v in self.scaled.items()))
        self.run_cfg = dataclasses.replace(cfg, **self.scaled)
        self.processor = load_processor(self.model_path)
        self.eval_ctx = EvalContext(self.processor, self.device, cfg.eval_batch_size, cfg.num_beams, self.amp, dist)
        self.model = load_model(self.model_path).to(self.device)
        use_aligned_attention(self.model, self.device)  # on CUDA: fused attention kernels for base-en's 52-wide heads
        self.family = family_of(self.model)
        self.random_weights = random_weights(self.model_path)
        log(f"model: {cfg.model} ({self.model_path}, {self.family.label}) on {device_name(self.device)}")
        if self.random_weights:
            log(f"warning: {weights_line(self.random_weights)}")
        self.modules = tuple(m.strip() for m in cfg.target_modules.split(",") if m.strip())
        # a typo fails now, not after the baseline
        self.pattern = target_regex(self.model, cfg.lora_scope, self.modules)
        audio_bytes = sum(2 * u.n_samples + 44 for u in self.split.parts["test"] +
                          [u for c in self.general.measured for u in c.test])
        self.folder.check_space(bytes_needed(self.model, self.pattern, self.run_cfg) + audio_bytes)

    def check_ranks_agree(self) -> None:
        """Every rank decoded its own data: the same clips everywhere, or stop before the first file is written."""
        parts, general = self.split.parts, self.general
        self.dist.agree({f"the {name} clips": [(u.id, u.text, u.n_samples) for u in us] for name, us in (
            ("training", parts["train"]), ("validation", parts["validation"]), ("test", parts["test"]),
            ("replay", general.replay.test if general.replay else []),
            ("canary", [u for c in general.canaries for u in c.test + c.val]))},
            "every rank must read the same data: give --source, --validation-source, --test-source, --replay and "
            "--canary paths that hold the same files on every machine")

    def read_back_test_set(self) -> None:
        """The test split as run_stt will read it: from the held-out manifest, audio from its WAV files."""
        from lora.data.sources import read_manifest
        from lora.data.store import keep_on_disk

        self.test = keep_on_disk(list(read_manifest(self.out / R.HELDOUT)), self.store)

    def measure(self, tag: str) -> tuple[dict, list[str], dict]:
        """The test split, validation loss, canaries and quiet clips: (metrics, transcripts, the rest's)."""
        from lora.evaluation.cost import measure_canaries, measure_quiet
        from lora.evaluation.evaluate import Clips, eval_loss, evaluate, wer_metrics

        model, ctx, test, val = self.model, self.eval_ctx, self.test, self.val
        t0 = time.perf_counter()
        with self.monitor.watch():
            loss_val = eval_loss(model, ctx, Clips(val), [u.text for u in val])
            loss_test, hyps = evaluate(model, ctx, Clips(test), texts=[u.text for u in test])
            canaries, canary_hyps = measure_canaries(model, ctx, self.general)
            quiet = measure_quiet(model, ctx)
        m = {"eval_loss": loss_val, "test_loss": loss_test, **wer_metrics([u.text for u in test], hyps),
             "seconds": time.perf_counter() - t0}
        self.log(f"{tag}: eval loss {loss_val:.4f}, test loss {loss_test:.4f}, WER {m['wer']:.2%} "
                 f"(raw {m['wer_raw']:.2%}), CER {m['cer']:.2%}" + "".join(
                     f"; {n} WER {c['wer']:.2%}" for n, c in canaries.items()))
        return m, hyps, {"canaries": canaries, "canary_predictions": canary_hyps, "quiet": quiet}

    def baseline(self, resuming: bool) -> dict:
        """The untouched model on the fixed held-out set: measured, or (resuming) read from the earlier attempt."""
        saved = self.dist.gather(self.folder.saved_baseline() if resuming else None)[0]
        if saved is not None:
            self.log(f"baseline: reused from {self.out / R.BASELINE} (resuming)")
            return saved
        metrics, hyps, cost = self.measure("baseline")
        self.folder.write_baseline(self.test, hyps, metrics, cost)
        return {"metrics": metrics, "cost": cost}

    def attach_lora(self) -> None:
        from lora.model.adapter import attach_lora, parameter_counts
        from lora.model.seed import seed_everything

        cfg = self.cfg
        seed_everything(cfg.seed)  # LoRA init and data order must not depend on what ran before (e.g. a first import)
        self.model = attach_lora(self.model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, self.pattern)
        self.trainable, self.total = parameter_counts(self.model)
        self.adapted = sorted({n.split(".lora_A")[0] for n, _ in self.model.named_parameters() if ".lora_A" in n})
        self.log(f"lora: r={cfg.lora_r} alpha={cfg.lora_alpha} on {len(self.adapted)} layers ({cfg.lora_scope}: "
                 f"{', '.join(self.modules)}); trainable {self.trainable:,} of {self.total:,} parameters "
                 f"({self.trainable / self.total:.2%})")

    def train(self, tracker):
        """The loop (:func:`lora.training.loop.train`); the best validation check's adapter is restored at its end."""
        from lora.config import quiet_per_batch
        from lora.data.general import QUIET_GUARD_CLIPS, QUIET_TRAINING_CLIPS, quiet_seconds, quiet_set
        from lora.evaluation.cost import Guard
        from lora.training.checkpoint import Checkpoints
        from lora.training.loop import train

        cfg, general = self.cfg, self.general
        guard = Guard(general, self.eval_ctx, cfg.max_regression, quiet_set("guard", QUIET_GUARD_CLIPS, cfg.seed))
        quiet = (quiet_set("train", QUIET_TRAINING_CLIPS, cfg.seed, quiet_seconds(self.split.parts["train"]))
                 if quiet_per_batch(cfg) else [])
        if quiet:
            self.log(f"quiet: {quiet_per_batch(cfg)} of every {cfg.batch_size} training clips without speech "
                     f"(drawn from {len(quiet)} of silence, noise and hum, made in code) with an empty target")
        result = train(self.model, self.eval_ctx, self.split.parts["train"], self.val, self.run_cfg,
                       self.out / R.TRAIN_LOG_PARTIAL, monitor=self.monitor,
                       checkpoints=Checkpoints(self.out / R.CHECKPOINTS, keep=cfg.keep_checkpoints),
                       progress=self.progress, train_autocast=self.train_amp, tracker=tracker,
                       replay=general.replay.test if general.replay else (), quiet=quiet, guard=guard)
        self.folder.finish_train_log()
        self.log(f"train: {result.steps} steps in {result.seconds:.0f} s, best eval loss {result.best_eval_loss:.4f} "
                 f"at step {result.best_step}{' (stopped early)' if result.stopped_early else ''}")
        if guard and result.best_step == 0:
            self.log(f"warning: no checkpoint kept the canaries within --max-regression {cfg.max_regression:g}, "
                     "wrote nothing on the guardrail's quiet clips and improved validation loss; the kept adapter is "
                     "the untouched model. Add --replay or --quiet-ratio, lower --learning-rate, or allow a larger "
                     "--max-regression")
        return result, guard

    def cost(self, before: dict, after: dict, result, guard) -> dict:
        """What tuning cost: each canary and the clips without speech, before and after, and the guardrail's checks."""
        from lora.evaluation.cost import cost_summary

        cost = cost_summary(self.general, before["canaries"], after["canaries"], before["quiet"], after["quiet"],
                            self.cfg.max_regression)
        cost["guardrail"] = {"validation_clips": len(guard.clips), "quiet_clips": len(guard.quiet),
                             "kept_step": result.best_step, "checks": [e for e in result.evals if "canary_wer" in e]}
        _log_cost(cost, self.log)
        return cost

    def score_terms(self) -> dict | None:
        """``--terms``: each term's recall on the held-out set, before and after, from the predictions files (a
        resumed run's baseline too), as verify_run recomputes them."""
        from lora.evaluation.terms import score_run, terms_line

        if self.terms is None:
            return None
        block = {**self.terms, **score_run(self.out, self.terms["listed"])}
        self.log(terms_line(block["baseline"], block["tuned"]))
        return block

    def metrics(self, command: str, baseline: dict, tuned: dict, result, cost: dict) -> dict:
        """``real_metrics.json``: what ran, on what, and what it measured."""
        from lora.model.device import device_name
        from lora.model.precision import precision_name

        data, split = self.data, self.split
        return {
            "status": "complete",
            "command": command,
            "config": self.run_cfg.to_dict(),
            "schedule_scaled": self.scaled,
            "model_path": self.model_path,
            "model": {"family": self.family.model_type, "label": self.family.label,
                      "random_weights": self.random_weights},
            "data": {"source": data.info.spec, "description": data.info.description,
                     "synthesized": data.info.synthesized, "text_mode": data.text_mode,
                     "screening": {"kept": len(data.screening.kept), "rejected": data.screening.rejected},
                     "split": split.summary(), "split_mode": split.mode, "split_mode_reason": split.reason,
                     "dropped_overlap": split.dropped_overlap, "dropped_same_audio": split.dropped_same_audio,
                     "held_out_sources": {p: {"source": i.spec, "description": i.description,
                                              "synthesized": i.synthesized,
                                              "screening": {"kept": len(sc.kept), "rejected": sc.rejected}}
                                          for p, (i, sc) in data.held.items()}},
            "lora": {"target_modules": self.pattern, "adapted_layers": len(self.adapted),
                     "trainable_parameters": self.trainable, "total_parameters": self.total},
            "train": {"steps": result.steps, "best_step": result.best_step, "stopped_early": result.stopped_early,
                      "train_loss": result.final_train_loss, "best_eval_loss": result.best_eval_loss,
                      "samples_seen": result.samples_seen, "seconds": result.seconds, "evals": result.evals},
            "baseline": baseline,
            "tuned": tuned,
            "general": self.general.summary(),
            "cost": cost,
            "device": {"type": self.device.type, "name": device_name(self.device),
                       "train_precision": precision_name(self.train_amp), "eval_precision": precision_name(self.amp),
                       "used_mps_fallback": self.monitor.used_fallback, "fallback_messages": self.monitor.messages[:5]},
            "distributed": {"world_size": self.dist.world, "backend": self.dist.backend},
            "report_to": self.report_to,
            "versions": _versions(),
            "git_commit": R.git_commit(),
            "elapsed_seconds": time.perf_counter() - self.t_start,
        }


def terms_plan(path: str, listed: list[str], split, log) -> dict:
    """``--terms FILE``'s terms checked against the held-out set before anything is written: the block
    ``real_metrics.json`` -> ``terms`` starts from."""
    from lora.evaluation.terms import check_terms_held_out, occurrences

    absent = check_terms_held_out(listed, [u.text for u in split.parts["test"]], path)
    in_train = occurrences([u.text for u in split.parts["train"]], listed)
    log(f"terms: {len(listed)} from {path}; {len(listed) - len(absent)} occur in the held-out set, "
        f"{sum(1 for n in in_train.values() if n)} in training" +
        (f"; not in the held-out set (no recall measured): {', '.join(absent)}" if absent else ""))
    return {"file": str(path), "listed": listed, "absent_from_test": absent, "train_occurrences": in_train}


def _versions() -> dict:
    import peft
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__}


def _log_cost(cost: dict, log) -> None:
    from lora.data.general import canary_words
    from lora.evaluation.cost import quiet_line, recorded_line

    for name, c in cost["canaries"].items():
        if c["skipped"]:
            continue
        kind, judged = canary_words(c)
        log(f"cost: {name} ({kind}) WER {c['baseline']['wer']:.2%} -> {c['tuned']['wer']:.2%} "
            f"({c['regression']:+.1%} relative; {judged}, bound {cost['max_regression']:+.0%})")
    log(f"cost: {quiet_line(cost['quiet'])}")
    rec = recorded_line(cost["recorded"], cost["max_regression"])
    log(f"cost: {rec}" if cost["recorded"]["enough"] else f"warning: {rec}")
