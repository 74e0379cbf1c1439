"""The tools a user would otherwise reach for, run the way their documentation says, for :mod:`lora.bench`.

* :func:`trainer_phase`: transformers' ``Seq2SeqTrainer`` with the same PEFT model, clips, batch
  and accumulation as ours, configured as its docs recommend for speed: ``group_by_length``
  (``train_sampling_strategy="group_by_length"`` in transformers 5) with a precomputed ``length``
  column, the processor's own padding collator (``feature_extractor.pad``, labels padded with
  -100), bf16 where the machine has it, no evaluation, logging or saving during the timed part; on a GPU,
  pinned memory and 4 data-loader workers (our loop prepares its batches in one background thread).
  Same optimizer and learning rate as our timed and quality loops (AdamW, constant, no clipping).
* :func:`runtime_transcription`: Moonshine's C++ runtime (the ``moonshine-cpp`` wheel) with its
  shipped int8 base-en, one clip at a time as its API works, in a child process.
"""

from __future__ import annotations

import statistics
import time


def trainer_phase(args, model, processor, utts, labels, held, init, device, mem, loaded, precision: str,
                  eval_amp) -> dict:
    import tempfile

    import datasets
    import torch
    from peft import set_peft_model_state_dict
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback
    from transformers.utils import logging as hf_logging

    from lora.data.batching import pad_labels
    from lora.evaluation.evaluate import EvalContext, eval_loss
    from lora.model.seed import seed_everything

    hf_logging.set_verbosity_error()
    audio_seen = [0.0]

    def collate(features):  # the speech fine-tuning guides' collator: pad the audio, -100 the label padding
        batch = processor.feature_extractor.pad([{"input_values": f["input_values"]} for f in features], padding=True,
                                                return_attention_mask=True, return_tensors="pt")
        return {"input_values": batch["input_values"], "attention_mask": batch["attention_mask"],
                "labels": pad_labels([list(f["labels"]) for f in features])}

    data = datasets.Dataset.from_dict({"input_values": [u.audio for u in utts], "labels": labels,
                                       "length": [u.audio.size for u in utts]}).with_format("numpy")

    class StepClock(TrainerCallback):
        def __init__(self):
            self.marks = []

        def on_step_end(self, args, state, control, **kwargs):
            if device.type == "cuda":
                torch.cuda.synchronize()  # the step's work is done, not only queued
            self.marks.append((time.perf_counter(), audio_seen[0]))

    class CountingTrainer(Seq2SeqTrainer):
        """Counts the audio of each batch in this process (the collator may run in data-loader workers)."""

        def training_step(self, model, inputs, *rest, **kw):
            audio_seen[0] += float(inputs["attention_mask"].sum()) / 16000  # still on the host here
            return super().training_step(model, inputs, *rest, **kw)

    def trainer(steps: int, lr: float, seed: int, clock=None):
        targs = Seq2SeqTrainingArguments(
            output_dir=tmp, per_device_train_batch_size=args.batch_size,
            gradient_accumulation_steps=args.effective_batch // args.batch_size, max_steps=steps, learning_rate=lr,
            lr_scheduler_type="constant", weight_decay=0.01, max_grad_norm=0.0, optim="adamw_torch",
            train_sampling_strategy="group_by_length", length_column_name="length", bf16=precision == "bf16",
            use_cpu=device.type == "cpu", remove_unused_columns=False, label_names=["labels"], report_to="none",
            save_strategy="no", eval_strategy="no", logging_strategy="no", disable_tqdm=True,
            dataloader_pin_memory=device.type == "cuda", dataloader_num_workers=4 if device.type == "cuda" else 0,
            seed=seed, data_seed=seed)
        return CountingTrainer(model=model, args=targs, train_dataset=data, data_collator=collate,
                              processing_class=processor, callbacks=[clock] if clock else [])

    with tempfile.TemporaryDirectory() as tmp:
        clock = StepClock()
        run = trainer(1 + args.repeats * args.steps, 1e-4, 1, clock)
        with mem:
            run.train()
        marks = clock.marks
        rates = [(marks[(r + 1) * args.steps][1] - marks[r * args.steps][1]) /
                 (marks[(r + 1) * args.steps][0] - marks[r * args.steps][0]) for r in range(args.repeats)]
        quality = []
        for seed in range(args.quality_seeds):
            set_peft_model_state_dict(model, init)
            seed_everything(seed)
            trainer(args.quality_steps, 1e-3, 100 + seed).train()
            quality.append(eval_loss(model, EvalContext(processor, device, args.eval_batch_size, autocast=eval_amp),
                                     [u.audio for u in held], [u.text for u in held]))
    return {"rate": statistics.median(rates), "peak": mem.peak, "peak_above_loaded": mem.peak - loaded,
            "precision": precision, "quality": quality, "quality_samples": args.quality_steps * args.effective_batch}


def runtime_transcription(model_spec: str, held) -> dict:
    """moonshine-cpp on the held-out clips; skipped unless --model is the base-en the runtime ships."""
    import tempfile
    from pathlib import Path

    from lora.data.audio import write_wav
    from lora.errors import LoraError
    from lora.model.load import resolve_model
    from lora.model.offline import is_imported_dir, shipped_base_en_dir
    from lora.runtime.moonshine_cpp import runtime_transcribe

    try:
        path = resolve_model(model_spec, log=lambda _: None)
        shipped = shipped_base_en_dir()
    except LoraError as exc:
        return {"skipped": str(exc)}
    if not is_imported_dir(path):
        return {"skipped": f"the runtime ships base-en; --model {model_spec} is another model"}
    with tempfile.TemporaryDirectory() as tmp:
        wavs = [Path(tmp) / f"{i:05d}.wav" for i in range(len(held))]
        for w, u in zip(wavs, held, strict=True):
            write_wav(w, u.audio)
        r = runtime_transcribe(shipped, "ort", "base", wavs)
    return {"rtf": sum(r.seconds) / sum(u.duration for u in held), "peak": r.peak_rss,
            "peak_above_loaded": r.peak_rss - r.loaded_rss, "texts": r.texts, "precision": "int8"}
