"""One set of rules for a run's configuration: the CLI and a config built in code refuse the same values."""

from __future__ import annotations

import pytest

from lora.config import PRESETS, RunConfig, build_config, scaled_schedule
from lora.errors import LoraError
from lora.runners.real_small import build_parser, config_from_args

# (flags as a user types them, the same values as RunConfig fields, what both must say)
BAD = [
    (["--lora-r", "0"], {"lora_r": 0}, "--lora-r must be > 0, got 0"),
    (["--max-steps", "0"], {"max_steps": 0}, "--max-steps must be > 0, got 0"),
    (["--batch-size", "-2"], {"batch_size": -2}, "--batch-size must be > 0, got -2"),
    (["--learning-rate", "0"], {"learning_rate": 0.0}, "--learning-rate must be > 0, got 0"),
    (["--samples", "-1"], {"samples": -1}, "--samples must be >= 0, got -1"),
    (["--pass-seconds", "-5"], {"pass_seconds": -5.0}, "--pass-seconds must be >= 0, got -5"),
    (["--patience", "-1"], {"patience": -1}, "--patience must be >= 0, got -1"),
    (["--weight-decay", "-0.1"], {"weight_decay": -0.1}, "--weight-decay must be >= 0, got -0.1"),
    (["--lora-dropout", "1.5"], {"lora_dropout": 1.5}, "--lora-dropout must be in [0, 1), got 1.5"),
    (["--mask-time-prob", "1"], {"mask_time_prob": 1.0}, "--mask-time-prob must be in [0, 1), got 1.0"),
    (["--warmup-steps", "5", "--max-steps", "5"], {"warmup_steps": 5, "max_steps": 5},
     "--warmup-steps must be in [0, --max-steps), got 5"),
    (["--replay-ratio", "0.25"], {"replay_ratio": 0.25}, "--replay-ratio needs --replay SPEC"),
    (["--replay", "default", "--replay-ratio", "0.9", "--batch-size", "4"],
     {"replay": "default", "replay_ratio": 0.9, "batch_size": 4}, "leave none of your clips in a batch of 4"),
    (["--quiet-ratio", "0.05", "--batch-size", "4"], {"quiet_ratio": 0.05, "batch_size": 4},
     "--quiet-ratio 0.05 puts no clip without speech in a batch of 4"),
    (["--replay", "default", "--replay-ratio", "0.5", "--quiet-ratio", "0.5", "--batch-size", "4"],
     {"replay": "default", "replay_ratio": 0.5, "quiet_ratio": 0.5, "batch_size": 4},
     "--replay-ratio 0.5 and --quiet-ratio 0.5 leave none of your clips in a batch of 4"),
    (["--canary", "calls"], {"canaries": ("calls",)}, "--canary expects NAME=SPEC"),
    (["--split-ratios", "1,-1,0"], {"split_ratios": (1.0, -1.0, 0.0)}, "--split-ratios must be three non-negative"),
    (["--target-modules", ","], {"target_modules": ","}, "--target-modules names no layer"),
]


@pytest.mark.parametrize("flags,fields,message", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_cli_and_code_refuse_the_same_values_with_the_same_line(flags, fields, message):
    with pytest.raises(LoraError) as from_cli:
        config_from_args(build_parser().parse_args(flags))
    with pytest.raises(LoraError) as from_code:
        RunConfig(**fields)
    assert message in str(from_cli.value)
    assert str(from_code.value) == str(from_cli.value)


def test_choices_are_checked_in_code_as_argparse_checks_them():
    for field, value in (("split_by", "voice"), ("text_mode", "shout"), ("device", "tpu"), ("precision", "fp8"),
                         ("lora_scope", "middle"), ("preset", "fast")):
        with pytest.raises(LoraError, match=f"unknown --{field.replace('_', '-')} '{value}'; valid: "):
            RunConfig(**{field: value})


def test_every_preset_passes_its_own_rules_and_a_replaced_field_is_checked_again():
    import dataclasses

    for name in PRESETS:
        assert build_config(name).preset == name
    cfg = build_config("personal")
    # 12 passes over 120 clips, 5 of them in a batch of 8 (2 replay, 1 without speech)
    assert dataclasses.replace(cfg, **scaled_schedule(cfg, 120)).max_steps == 288
    with pytest.raises(LoraError, match="--eval-every must be > 0"):
        dataclasses.replace(cfg, eval_every=0)
    # a schedule scaled to the data meets the same rules: 120 clips give 288 steps, below the warmup asked for
    late = build_config("personal", warmup_steps=300)
    with pytest.raises(LoraError, match=r"--warmup-steps must be in \[0, --max-steps\), got 300 with --max-steps 288"):
        dataclasses.replace(late, **scaled_schedule(late, 120))


def test_lists_from_json_become_tuples():
    cfg = RunConfig(split_ratios=[0.5, 0.25, 0.25], canaries=["a=folder:x"])
    assert cfg.split_ratios == (0.5, 0.25, 0.25) and cfg.canaries == ("a=folder:x",)
    assert RunConfig(**cfg.to_dict()) == cfg
