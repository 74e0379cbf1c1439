"""The run configuration: one dataclass, filled from presets, then from flags, checked in one place
(:func:`validate`). No torch here."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

MAX_REGRESSION = 0.10  # guardrail default: canary WER may rise this much, relative (docs/canaries.md)


@dataclass
class RunConfig:
    # model
    model: str = "UsefulSensors/moonshine-tiny"  # hub id, checkpoint folder, or "offline" (imported base-en)
    device: str = "auto"  # auto picks cuda, then mps, then cpu
    require_device: bool = False  # make any MPS->CPU fallback an error
    precision: str = "auto"  # training compute: auto (bf16 on CUDA, fp32 elsewhere) | fp32 | bf16
                             # (CPU: AVX512-BF16/AMX)
    # data
    source: str = "librispeech"  # librispeech[:SPLIT] | librispeech-dir:PATH | manifest:PATH | folder:PATH
                                 # | audiofolder:PATH | synth:PATH
    validation_source: str = ""  # a held-out validation set of your own (any source spec); "" = drawn from source
    test_source: str = ""  # a held-out test set of your own (any source spec); "" = drawn from source
    split_by: str = "auto"  # auto | speaker | utterance (auto: by speaker when there are enough speakers)
    ls_config: str = "clean"  # LibriSpeech config for the streaming source
    ls_split: str = "train.100"  # LibriSpeech split for the streaming source
    samples: int = 300  # utterances used, drawn with the seed (plan: 200-500; 0 = all of a local source)
    shuffle_buffer: int = 1000  # bounded shuffle buffer for streaming
    max_seconds: float = 20.0  # drop longer clips (reported)
    split_ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train/validation/test fractions of the clips
    text_mode: str = "auto"  # auto | as-is | lower | sentence (auto: all-caps corpora become sentence case)
    terms: str = ""  # a text file of key terms, one per line: each one's recall on the held-out set, before and
                     # after, and WER on the other words (lora.evaluation.terms); "" = none
    # what tuning costs (lora.data.general, lora.evaluation.cost)
    canaries: tuple[str, ...] = ()  # NAME=SPEC sets measured before and after; () = the defaults; ("none",) = none
    canary_clips: int = 64  # test clips drawn from each canary, at least (plus up to 300 words for the guardrail's
                            # validation slice)
    canary_words: int = 550  # ... and reference words, at least: enough to see a +10% rise at a 5% base WER
                             # (lora.evaluation.cost.words_to_see; a canary with fewer is measured whole)
    replay: str = ""  # general speech mixed into training: a source spec, "default" (synthesized voices), "" = none
    replay_ratio: float = 0.0  # fraction of every training batch drawn from --replay
    quiet_ratio: float = 0.0  # fraction of every training batch that is a clip without speech (empty target)
    max_regression: float = MAX_REGRESSION  # guardrail: a rise of canary WER (relative) the clips may not show beyond
    # LoRA
    lora_r: int = 8  # adapter rank
    lora_alpha: int = 16  # scaling numerator (scale = alpha / r)
    lora_dropout: float = 0.05  # dropout on the adapter input
    target_modules: str = "q_proj,k_proj,v_proj,o_proj,fc1,fc2"  # leaf names of linear layers to adapt
    lora_scope: str = "both"  # encoder | decoder | both
    # optimisation
    learning_rate: float = 1e-3  # AdamW peak learning rate
    weight_decay: float = 0.0  # AdamW weight decay on adapter weights
    warmup_steps: int | None = 50  # linear warmup, then cosine decay to zero at max_steps (None: scaled to the data)
    max_steps: int | None = 1000  # optimizer steps (plan: 500-1500) (None: scaled to the data, see scaled_schedule)
    batch_size: int = 1  # utterances per forward pass
    grad_accum: int = 8  # micro-batches per optimizer step (effective batch = batch_size * grad_accum)
    pass_seconds: float | None = None  # padded audio seconds per forward pass (0: one pass per micro-batch; None: auto)
    max_grad_norm: float = 1.0  # gradient clipping
    mask_time_prob: float = 0.0  # time masks while training: about this fraction of each clip's encoder frames zeroed
                                 # in spans (SpecAugment, as wav2vec2/Whisper in transformers; 0: off)
    mask_time_length: int = 5  # encoder frames per masked span (base-en: ~42 frames per second, so 5 is ~120 ms)
    average_steps: int | None = 0  # keep a moving average of the adapter over ~N steps (0: off; None: eval_every)
    eval_every: int | None = 100  # optimizer steps between validation-loss checks (None: scaled to the data)
    patience: int = 3  # stop after this many checks without improvement (0: never stop early)
    save_every: int | None = 100  # optimizer steps between resumable checkpoints (0: only on Ctrl-C;
                                  # None: = eval_every)
    keep_checkpoints: int = 2  # how many recent checkpoints to keep
    # evaluation
    eval_batch_size: int = 16  # utterances per batch for loss and transcription (16: 3.2x per-utterance speed
                               # on a 2-core CPU)
    num_beams: int = 1  # 1 = greedy decoding
    # run
    seed: int = 0  # seeds python, numpy and torch; fixes data order and split
    output_dir: str = "outputs/real_small"  # where artifacts go
    preset: str = "none"  # the preset that filled the defaults

    def __post_init__(self) -> None:
        self.split_ratios, self.canaries = tuple(self.split_ratios), tuple(self.canaries)  # lists from JSON or code
        validate(self)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["split_ratios"] = list(self.split_ratios)
        d["canaries"] = list(self.canaries)
        return d

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


# A preset only fills defaults; every flag still overrides it.
PRESETS: dict[str, dict] = {
    "none": {},
    # The plan's configuration: moonshine-tiny on 300 streamed LibriSpeech train.100 utterances.
    "plan": {},
    # No network: base-en imported from the moonshine-cpp wheel, espeak-ng corpus synthesized on first use.
    # No LoRA dropout: PEFT drops out each adapter's input separately, which costs a fifth of a step and did not
    # help here (docs/performance.md, "LoRA dropout").
    "offline": dict(model="offline", source="synth:default", samples=0, split_ratios=(0.7, 0.1, 0.2), batch_size=8,
                    grad_accum=2, max_steps=120, warmup_steps=10, eval_every=20, save_every=20, patience=3, lora_r=16,
                    lora_alpha=32, lora_dropout=0.0, learning_rate=1e-3, max_seconds=15.0),
    # Your own recordings: 50-500 clips, often one voice, on a CPU in minutes. Fills training defaults only
    # (--model and --source stay yours). Steps, validation interval and warmup are scaled to the training clips by
    # scaled_schedule(); early stopping keeps the best adapter, and two checks without improvement end the run
    # (later checks almost never improved: docs/recorded.md). No dropout and r=16 as in the offline preset; batch 8
    # is the fast CPU batch (docs/performance.md). The adapter validated and kept is its moving average over one
    # validation interval, a quarter of each batch is general speech (replay) and one clip in eight has no speech
    # and an empty target, so the tuned model keeps writing nothing on silence: docs/recorded.md, docs/canaries.md.
    "personal": dict(batch_size=8, grad_accum=1, max_steps=None, warmup_steps=None, eval_every=None, save_every=None,
                     patience=2, lora_r=16, lora_alpha=32, lora_dropout=0.0, learning_rate=1e-3, samples=0,
                     split_ratios=(0.8, 0.1, 0.1), max_seconds=30.0, replay="default", replay_ratio=0.25,
                     quiet_ratio=0.125, average_steps=None),
    # CI's short end-to-end path: same code, few utterances and steps (acceptance check relaxed). No dropout,
    # so `torchrun --nproc_per_node 2` gives it step for step (dropout masks are drawn per process).
    "smoke": dict(model="offline", source="synth:default", split_ratios=(0.6, 0.2, 0.2), batch_size=4,
                  grad_accum=1, max_steps=6, warmup_steps=2, eval_every=3, patience=0, samples=60, lora_dropout=0.0,
                  canary_clips=24, canary_words=0),
}


PERSONAL_EPOCHS = 12  # passes over the training clips when the schedule is scaled to the data
PERSONAL_STEPS = (40, 600)  # ... within these bounds (a CPU does ~1 step/s of batch 8 on base-en)


def replay_per_batch(cfg: RunConfig) -> int:
    """Replay clips in each micro-batch of ``batch_size`` clips (the rest are the user's and the quiet ones)."""
    return round(cfg.replay_ratio * cfg.batch_size) if cfg.replay else 0


def quiet_per_batch(cfg: RunConfig) -> int:
    """Clips without speech in each micro-batch (:func:`lora.data.general.quiet_training_clips`)."""
    return round(cfg.quiet_ratio * cfg.batch_size)


def own_per_batch(cfg: RunConfig) -> int:
    """The user's clips in each micro-batch."""
    return cfg.batch_size - replay_per_batch(cfg) - quiet_per_batch(cfg)


def scaled_schedule(cfg: RunConfig, train_clips: int) -> dict:
    """Values for the schedule fields left None (the personal preset), from the number of training clips; empty
    when none is None.

    ``PERSONAL_EPOCHS`` passes over the training clips (a step takes ``grad_accum`` micro-batches of
    ``batch_size`` clips, :func:`own_per_batch` of them the user's), bounded by ``PERSONAL_STEPS``;
    validation ten times per run (so early stopping can act), warmup a tenth of the run, a checkpoint at
    every validation, and (``average_steps`` None) the adapter averaged over one validation interval.
    """
    import math

    if None not in (cfg.max_steps, cfg.eval_every, cfg.warmup_steps, cfg.save_every, cfg.average_steps):
        return {}
    per_epoch = math.ceil(train_clips / (own_per_batch(cfg) * cfg.grad_accum))
    steps = cfg.max_steps or min(max(PERSONAL_EPOCHS * per_epoch, PERSONAL_STEPS[0]), PERSONAL_STEPS[1])
    every = cfg.eval_every or max(1, steps // 10)
    out = {"max_steps": steps, "eval_every": every,
           "warmup_steps": cfg.warmup_steps if cfg.warmup_steps is not None else max(1, steps // 10),
           "save_every": cfg.save_every if cfg.save_every is not None else every,
           "average_steps": cfg.average_steps if cfg.average_steps is not None else every}
    return out  # checked by validate() when the caller puts it into the config (dataclasses.replace)


def build_config(preset: str = "none", **overrides) -> RunConfig:
    """A preset's defaults with ``overrides`` (None: not given) on top; :meth:`RunConfig.__post_init__` checks it."""
    base = dict(PRESETS.get(preset, {}))
    base.update({k: v for k, v in overrides.items() if v is not None})
    base["preset"] = preset
    if base.get("replay") == "none":
        base["replay"], base["replay_ratio"] = "", 0.0
    return RunConfig(**base)


# What each flag may be: the one place these rules live. Every RunConfig is checked against them when it is made
# (the CLI, a preset, the studio, a test's config), so a value the CLI refuses is refused however it was built.
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16")
SPLIT_MODES = ("auto", "speaker", "utterance")
TEXT_MODES = ("auto", "as-is", "lower", "sentence")
LORA_SCOPES = ("both", "encoder", "decoder")
CHOICES = {"device": DEVICES, "precision": PRECISIONS, "split_by": SPLIT_MODES, "text_mode": TEXT_MODES,
           "lora_scope": LORA_SCOPES}
POSITIVE = ("max_seconds", "learning_rate", "max_steps", "batch_size", "grad_accum", "max_grad_norm",
            "mask_time_length", "eval_every", "keep_checkpoints", "canary_clips", "lora_r", "lora_alpha",
            "eval_batch_size", "num_beams")  # > 0 (None, where a field allows it: scaled to the data)
NON_NEGATIVE = ("samples", "canary_words", "pass_seconds", "average_steps", "save_every", "patience", "max_regression",
                "weight_decay", "warmup_steps")
FRACTIONS = ("lora_dropout", "replay_ratio", "quiet_ratio", "mask_time_prob")  # in [0, 1)


def flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def parse_canary(text: str) -> tuple[str, str]:
    """``NAME=SPEC`` -> (name, spec)."""
    import re

    from lora.errors import DataError

    name, sep, spec = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name) or not spec:
        raise DataError(f"--canary expects NAME=SPEC (e.g. calls=folder:~/calls), got '{text}'")
    return name, spec


def check_split_ratios(ratios) -> None:
    from lora.errors import DataError

    if len(ratios) != 3 or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise DataError(f"--split-ratios must be three non-negative numbers, got {ratios}")


def validate(cfg: RunConfig) -> None:
    """Every rule a run configuration must meet, in one place (called by ``RunConfig.__post_init__``)."""
    from lora.errors import LoraError

    if cfg.preset not in PRESETS:
        raise LoraError(f"unknown --preset '{cfg.preset}'; valid: {', '.join(sorted(PRESETS))}")
    for name, valid in CHOICES.items():
        if getattr(cfg, name) not in valid:
            raise LoraError(f"unknown {flag(name)} '{getattr(cfg, name)}'; valid: {', '.join(valid)}")
    for name in POSITIVE + NON_NEGATIVE:
        value = getattr(cfg, name)
        if value is not None and (value < 0 or (value == 0 and name in POSITIVE)):
            raise LoraError(f"{flag(name)} must be {'> 0' if name in POSITIVE else '>= 0'}, got {value:g}")
    for name in FRACTIONS:
        if not 0 <= getattr(cfg, name) < 1:
            raise LoraError(f"{flag(name)} must be in [0, 1), got {getattr(cfg, name)}")
    check_split_ratios(cfg.split_ratios)
    if not [m for m in cfg.target_modules.split(",") if m.strip()]:
        raise LoraError("--target-modules names no layer; give comma-separated linear layer names, e.g. q_proj,v_proj")
    if cfg.canaries != ("none",):
        for c in cfg.canaries:
            parse_canary(c)  # a malformed NAME=SPEC fails before any data is read
    if cfg.warmup_steps is not None and cfg.max_steps and cfg.warmup_steps >= cfg.max_steps:
        raise LoraError(f"--warmup-steps must be in [0, --max-steps), got {cfg.warmup_steps} with --max-steps "
                        f"{cfg.max_steps}")
    if cfg.replay_ratio and not cfg.replay:
        raise LoraError("--replay-ratio needs --replay SPEC (general speech to mix in; 'default' = synthesized voices)")
    if cfg.replay and cfg.replay_ratio and replay_per_batch(cfg) == 0:
        raise LoraError(f"--replay-ratio {cfg.replay_ratio} puts no replay clip in a batch of {cfg.batch_size}; "
                        "raise --replay-ratio or --batch-size")
    if cfg.quiet_ratio and quiet_per_batch(cfg) == 0:
        raise LoraError(f"--quiet-ratio {cfg.quiet_ratio} puts no clip without speech in a batch of {cfg.batch_size}; "
                        "raise --quiet-ratio or --batch-size")
    if own_per_batch(cfg) <= 0:
        raise LoraError(f"--replay-ratio {cfg.replay_ratio:g} and --quiet-ratio {cfg.quiet_ratio:g} leave none of your "
                        f"clips in a batch of {cfg.batch_size}")


# Training memory per padded audio-second of a forward pass (activations kept for the backward pass), with
# headroom: on an H200, bf16, base-en shapes, a pass of 256 clips of 3-6 s took 11,968 MiB above the loaded
# model (15,731 before lora.model.attention.aligned_sdpa), at most 1,536 padded seconds: >= 7.8 MiB each.
# docs/performance.md, "GPU".
TRAIN_BYTES_PER_AUDIO_SECOND = 20 * 2**20
# The share of a GPU's memory that the automatic --pass-seconds lets one forward pass use.
GPU_MEMORY_SHARE = 0.5


def pass_budget(cfg: RunConfig, device, world: int = 1) -> tuple[int | None, bool]:
    """(padded samples per global forward pass, whether to merge micro-batches) for
    :func:`lora.data.batching.forward_passes`. ``--pass-seconds S``: the step's clips packed into passes of S seconds.
    Not given: on CUDA, micro-batches over what half the card's memory holds are split (a memory cap, nothing
    merged); elsewhere one pass per micro-batch. 0: one pass per micro-batch."""
    import torch

    seconds = cfg.pass_seconds
    if seconds is None and getattr(device, "type", device) == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        return int(GPU_MEMORY_SHARE * total / TRAIN_BYTES_PER_AUDIO_SECOND * 16000) * world, False
    return (int(seconds * 16000) * world, True) if seconds else (None, True)
