"""The run's data, from its RunConfig: ``--source`` decoded and screened, the held-out parts the user gave, the
split, and the general speech (canaries, replay) checked against the run's own clips."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from lora.config import RunConfig
from lora.data.prepare import Screening, Split, apply_text_mode, resolve_text_mode, screen, split_data
from lora.data.sources import SourceInfo, describe, load_source
from lora.errors import DataError


def resolve_source(spec: str, log=print) -> str:
    """``synth:default`` is the embedded offline corpus, synthesized into the cache on first use."""
    if spec != "synth:default":
        return spec
    from lora.data.synth import synthesize_corpus
    from lora.storage.cache import cache_root, filling

    folder = cache_root() / "synth-default"
    with filling(folder):
        return "synth:" + str(synthesize_corpus(folder, log=log))


@dataclass
class Data:
    info: SourceInfo  # --source
    screening: Screening
    split: Split
    text_mode: str
    held: dict[str, tuple[SourceInfo, Screening]] = field(default_factory=dict)  # parts given by the user


def load_screened(cfg: RunConfig, given: str, log=print, store=None,
                  n: int | None = None) -> tuple[SourceInfo, Screening]:
    """One source, decoded and screened (``n``: clips drawn from a streamed source; default ``--samples``)."""
    spec = resolve_source(given, log)
    return describe(spec, cfg.ls_config, cfg.ls_split), screen(
        load_source(spec, config=cfg.ls_config, split=cfg.ls_split, n=n or cfg.samples or 300, seed=cfg.seed,
                    buffer=cfg.shuffle_buffer), cfg.max_seconds, store)


def prepare_data(cfg: RunConfig, log=print, store=None) -> Data:
    """Decode, screen and split; with ``store`` (a :class:`lora.data.store.AudioStore`), kept audio goes to disk
    as it is decoded, so memory does not grow with the corpus."""
    def load(given: str) -> tuple[SourceInfo, Screening]:
        return load_screened(cfg, given, log, store)

    info, screening = load(cfg.source)
    utts = screening.kept
    drawn = ""
    if cfg.samples and len(utts) > cfg.samples:
        utts = sorted(random.Random(cfg.seed).sample(utts, cfg.samples), key=lambda u: u.id)
        drawn = f"; {len(utts)} drawn with seed {cfg.seed}"
    log(f"data: {info.description}; {screening.summary()}{drawn}")
    held: dict[str, tuple[SourceInfo, Screening]] = {}
    for part, given in (("validation", cfg.validation_source), ("test", cfg.test_source)):
        if given:
            held[part] = load(given)
            log(f"{part} (--{part}-source): {held[part][0].description}; {held[part][1].summary()}")
    split = split_data(utts, tuple(cfg.split_ratios), cfg.seed, cfg.split_by, {p: s.kept for p, (_, s) in held.items()})
    text_mode = resolve_text_mode(cfg.text_mode, (u.text for us in split.parts.values() for u in us))
    for part in split.parts.values():
        for u in part:
            u.text = apply_text_mode(u.text, text_mode)
    summary = ", ".join(f"{p} {s['utterances']} utt/{s['speakers']} spk" for p, s in split.summary().items())
    log(f"split: by {split.mode} ({split.reason})"
        f"{'; voices shared by training and test' if split.mode == 'utterance' else ''}; "
        f"{summary}; dropped from training: {split.dropped_overlap} held-out sentences, {split.dropped_same_audio} "
        f"held-out clips; text mode {text_mode}")
    if not split.parts["validation"] or not split.parts["test"]:
        raise DataError("the split left no validation or test utterances; add clips or speakers, raise --split-ratios, "
                        "or give --validation-source / --test-source")
    return Data(info, screening, split, text_mode, held)


def prepare_general(cfg: RunConfig, data: Data, log=print, store=None):
    """The canaries and the replay set (:mod:`lora.data.general`), checked against the run's own clips."""
    from lora.config import replay_per_batch
    from lora.data.general import prepare_general as prepare

    def load(spec: str, n: int | None):
        info, screening = load_screened(cfg, spec, log, store, n)
        return info, screening.kept

    return prepare(cfg.canaries, cfg.replay if replay_per_batch(cfg) else "", cfg.canary_clips, cfg.seed,
                   data.split.parts, load, lambda t: apply_text_mode(t, data.text_mode), log, cfg.source,
                   cfg.canary_words)
