"""python -m lora.runners.real_small: train a LoRA adapter and prove it helped.

Flags are parsed here without importing torch (so --help is instant); the work happens in
:mod:`lora.training.job`. Defaults follow the plan (moonshine-tiny, streamed LibriSpeech);
``--preset offline`` runs with no network (imported base-en + synthesized speech).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

from lora.config import DEVICES, LORA_SCOPES, PRECISIONS, PRESETS, SPLIT_MODES, TEXT_MODES, RunConfig, build_config
from lora.errors import cli_main
from lora.training.job import REPORT_TO


def _ratios(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers, got '{text}'") from None
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers, got '{text}'")
    return parts  # type: ignore[return-value]


def _positive(kind, allow_zero: bool = False):
    def parse(text: str):
        value = kind(text)
        if value < 0 or (value == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(f"must be {'>=' if allow_zero else '>'} 0, got {text}")
        return value
    return parse


def add_data_arguments(g) -> None:
    """Flags that choose, screen and split the data; shared with lora.scripts.build_manifest.

    Defaults are None so a preset (or RunConfig) fills them; the help says what that is.
    """
    g.add_argument("--ls-config", help="LibriSpeech config: clean | other | all")
    g.add_argument("--ls-split", help="LibriSpeech split")
    g.add_argument("--samples", type=int, help="utterances to use, drawn with the seed; 0 = all of a local source")
    g.add_argument("--max-seconds", type=float, help="drop longer clips")
    g.add_argument("--split-ratios", type=_ratios, help="train,validation,test fractions of the clips")
    g.add_argument("--split-by", choices=SPLIT_MODES,
                   help="speaker: no voice in two parts (tests new voices); utterance: clips of the same voices "
                        "(tests adaptation to them); auto: speaker when there are enough speakers (default)")
    g.add_argument("--text-mode", choices=TEXT_MODES, help="training target casing")


def add_training_arguments(g) -> None:
    """The optimisation flags (defaults None: a preset or RunConfig fills them)."""
    g.add_argument("--learning-rate", type=float, help="AdamW peak learning rate")
    g.add_argument("--weight-decay", type=float, help="AdamW weight decay")
    g.add_argument("--warmup-steps", type=int, help="linear warmup steps before cosine decay")
    g.add_argument("--max-steps", type=int, help="optimizer steps")
    g.add_argument("--batch-size", type=int, help="utterances per micro-batch")
    g.add_argument("--grad-accum", type=int, help="micro-batches per optimizer step")
    g.add_argument("--pass-seconds", type=float,
                   help="padded audio seconds per forward pass: a step's clips are sorted by length and packed into "
                        "passes of this size, with the same gradient; 0 = one pass per micro-batch (default: on CUDA, "
                        "micro-batches larger than half the card's memory holds are split; elsewhere 0)")
    g.add_argument("--max-grad-norm", type=float, help="gradient clipping norm")
    g.add_argument("--mask-time-prob", type=float,
                   help="time masks while training (SpecAugment): about this fraction of each clip's encoder frames "
                        "zeroed in spans; 0 = off")
    g.add_argument("--mask-time-length", type=int, help="encoder frames per masked span (default 5)")
    g.add_argument("--eval-every", type=int, help="steps between validation-loss checks")
    g.add_argument("--average-steps", type=int,
                   help="validate, and keep, a moving average of the adapter over about this many recent steps "
                        "instead of its latest weights; 0 = off (personal preset: one validation interval)")
    g.add_argument("--patience", type=int, help="checks without improvement before stopping; 0 = never")
    g.add_argument("--save-every", type=int, help="steps between resumable checkpoints; 0 = only on Ctrl-C")
    g.add_argument("--keep-checkpoints", type=int, help="recent checkpoints kept")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lora.runners.real_small", description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="none",
                   help="fill defaults: offline = no network (imported base-en + espeak-ng corpus); personal = your "
                        "own recordings (training defaults scaled to your data; --model/--source stay yours); smoke = "
                        "CI's short run")
    g = p.add_argument_group("model and device")
    g.add_argument("--model", help="hub id, checkpoint folder, or 'offline'")
    g.add_argument("--device", choices=DEVICES, help="auto: cuda, then mps, then cpu")
    g.add_argument("--require-device", action="store_true", default=None, help="fail on any MPS->CPU fallback")
    g.add_argument("--precision", choices=PRECISIONS,
                   help="training compute: auto = bf16 on CUDA, fp32 elsewhere; bf16 also on CPUs with AVX512-BF16/AMX "
                        "(1.3x per step on the offline preset here); evaluation stays as run_stt computes it")
    g = p.add_argument_group("data")
    g.add_argument("--source", help="librispeech[:SPLIT] | librispeech-dir:PATH | manifest:PATH | folder:PATH | "
                                    "audiofolder:PATH | synth:PATH (default librispeech)")
    g.add_argument("--validation-source",
                   help="your own validation set (any source spec); default: drawn from --source")
    g.add_argument("--test-source",
                   help="your own test set (any source spec); default: drawn from --source. Clips of --source with "
                        "the same audio or sentence are dropped from training, and counted")
    add_data_arguments(g)
    g.add_argument("--terms", metavar="FILE",
                   help="your key terms, one per line ('#' comments): the recall of each on the held-out set before "
                        "and after tuning, and WER on the other words (docs/terms.md)")
    g = p.add_argument_group("what tuning costs (docs/canaries.md)")
    g.add_argument("--canary", dest="canaries", action="append", metavar="NAME=SPEC",
                   help="general speech measured before and after, never trained on (repeatable; any source spec). "
                        "Default: the recorded telephone prompts (if installed), the readings in Moonshine's wheels, "
                        "synthesized voices not used for replay, and LibriSpeech test.clean when the hub is "
                        "reachable; 'none' = no canary")
    g.add_argument("--canary-clips", type=int, help="test clips drawn from each canary, at least (default 64)")
    g.add_argument("--canary-words", type=int,
                   help="reference words in each canary's test part, at least (default 550: a +10%% rise at a 5%% "
                        "base WER can be told from noise; 0 = by --canary-clips only)")
    g.add_argument("--replay", help="general speech mixed into every training batch: a source spec, 'default' "
                                    "(synthesized voices the canaries never use) or 'none' (personal preset: default)")
    g.add_argument("--replay-ratio", type=float,
                   help="fraction of each batch drawn from --replay (personal preset: 0.25)")
    g.add_argument("--quiet-ratio", type=float,
                   help="fraction of each batch that is a clip without speech (silence, noise, hum; made in code, "
                        "seeded) with an empty target, so the model keeps writing nothing there (personal preset: "
                        "0.125; 0 = none)")
    g.add_argument("--max-regression", type=float,
                   help="guardrail: no checkpoint whose canary clips show (one-sided 95%%) a WER rise beyond this, "
                        "relative to the base model's, is kept (default 0.10 = +10%%); verify_run fails a run "
                        "beyond it")
    g = p.add_argument_group("LoRA")
    g.add_argument("--lora-r", type=int, help="adapter rank")
    g.add_argument("--lora-alpha", type=int, help="LoRA alpha; scale = alpha/r")
    g.add_argument("--lora-dropout", type=float, help="dropout on adapter inputs")
    g.add_argument("--target-modules", help="comma-separated linear layer names")
    g.add_argument("--lora-scope", choices=LORA_SCOPES, help="where adapters go")
    add_training_arguments(p.add_argument_group("training"))
    g = p.add_argument_group("evaluation and output")
    g.add_argument("--eval-batch-size", type=int, help="batch size for loss and transcription")
    g.add_argument("--num-beams", type=int, help="1 = greedy decoding")
    g.add_argument("--seed", type=int, help="seed for data order, split and initialisation")
    g.add_argument("--output-dir", help="artifact folder")
    g.add_argument("--force", action="store_true", help="replace a finished run in --output-dir")
    g.add_argument("--resume", action="store_true",
                   help="continue the unfinished run in --output-dir (rerunning the same command does this too)")
    g.add_argument("--report-to", choices=REPORT_TO, default="none",
                   help="also log step metrics to TensorBoard (<output-dir>/tensorboard); train_log.jsonl is always "
                        "written")
    g = p.add_argument_group("several processes (torchrun --nproc_per_node N -m lora.runners.real_small ...)")
    g.add_argument("--dist-timeout", type=_positive(float), default=600.0,
                   help="seconds a rank waits for the others before failing (a hung or lost peer; default 600)")
    g = p.add_argument_group("output")
    g.add_argument("-q", "--quiet", action="store_true", help="print only errors and the final summary")
    g.add_argument("-v", "--verbose", action="store_true", help="debug logs (which backend decoded each audio file)")
    show_defaults(p)
    return p


def show_defaults(parser: argparse.ArgumentParser) -> None:
    """Append ``(default X)`` to the help of every flag that sets a :class:`RunConfig` field, X read from the
    dataclass: defaults are written once, there (a preset may still change them). A help that already says
    what its default is, in its own words, is left as written."""
    d = RunConfig()
    for action in parser._actions:
        if (action.help and action.dest in RunConfig.field_names() and "default" not in action.help.lower()
                and not isinstance(getattr(d, action.dest), bool)):
            value = getattr(d, action.dest)
            shown = (",".join(f"{v:g}" for v in value) if isinstance(value, tuple) else
                     f"{value:g}" if isinstance(value, float) else value)
            action.help += f" (default {shown})"


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The flags given, on top of the preset's defaults; every value is checked by :func:`lora.config.validate`."""
    return build_config(args.preset, **{k: v for k, v in vars(args).items()
                                        if k in RunConfig.field_names() and k != "preset"})


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    if args.verbose:
        import logging

        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
        for noisy in ("urllib3", "filelock", "fsspec", "matplotlib", "PIL", "httpx", "httpcore"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    from lora.model.load import progress_bars_only_on_a_terminal
    from lora.training.job import run

    progress_bars_only_on_a_terminal()
    if args.quiet:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, flush=True)

    command = "python -m lora.runners.real_small " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    m = run(cfg, force=args.force, command=command, log=log, resume=args.resume, progress=not args.quiet,
            report_to=args.report_to, dist_timeout=args.dist_timeout)
    if m is None:  # not rank 0: rank 0 reports
        return 0
    b, t, cost = m["baseline"], m["tuned"], m["cost"]
    if m["model"]["random_weights"]:
        from lora.model.random_init import weights_line

        print(f"warning: {weights_line(m['model']['random_weights'])}")
    print(f"baseline WER {b['wer']:.2%} -> tuned {t['wer']:.2%}; test loss {b['test_loss']:.4f} -> "
          f"{t['test_loss']:.4f}; artifacts: {cfg.output_dir}")
    print(f"cost: {_worst_canary(cost)}; {cost['quiet']['added_words']} words added on clips without speech")
    if m.get("terms"):
        from lora.evaluation.terms import terms_line

        print(terms_line(m["terms"]["baseline"], m["terms"]["tuned"]))
    if not cost["recorded"]["enough"]:
        from lora.evaluation.cost import recorded_line

        print(f"warning: {recorded_line(cost['recorded'], cost['max_regression'])}")
    return 0


def _worst_canary(cost: dict) -> str:
    """The judged canary that rose most, named, with its verdict (a rise the clips cannot show is within)."""
    from lora.data.general import canary_words

    gated = {n: c for n, c in cost["canaries"].items() if c.get("gated")}
    if not gated:
        return "no canary large enough to judge"
    name = max(gated, key=lambda n: gated[n]["regression"])
    kind, judged = canary_words(gated[name])
    beyond = [n for n, c in gated.items() if not c["within_bound"]]
    verdict = (f"all {len(gated)} judged canaries within" if not beyond else
               f"{len(beyond)} of {len(gated)} judged canaries BEYOND ({', '.join(sorted(beyond))})")
    return (f"worst canary {name} ({kind}) {gated[name]['regression']:+.1%} relative WER ({judged}); "
            f"{verdict} --max-regression {cost['max_regression']:g}")


if __name__ == "__main__":
    sys.exit(cli_main(main))
