"""python -m lora.scripts.import_prompts: import recorded prompts (a prompt list + audio) as train/test folders.

With neither --audio nor --transcripts it imports Debian's Asterisk English prompts (packages
asterisk-core-sounds-en and asterisk-core-sounds-en-g722: one professional voice, G.722 telephone
audio, CC-BY-SA-3.0; --format gsm reads the same prompts over GSM from asterisk-core-sounds-en-gsm).
Rows whose text is not what is said (notes, tones, digits, symbols) are dropped, known typos corrected,
and a seeded fraction of the distinct texts held out as OUTPUT/test. The list may be 'key: text' lines,
Festvox's txt.done.data (CMU ARCTIC: --audio DIR/wav --transcripts DIR/etc/txt.done.data) or LJSpeech's
metadata.csv (--audio DIR/wavs --transcripts DIR/metadata.csv; its written-out third column is read).
Written atomically and cached: a rerun with the same inputs does nothing. See docs/recorded.md.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lora.errors import DataError, cli_main


def _fraction(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not 0 < x < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {value}")
    return x


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lora.scripts.import_prompts", description=__doc__.splitlines()[0])
    p.add_argument("--audio", help="folder of audio files named by key (key 'digits/10' -> digits/10.wav, .g722, ...); "
                                   "default: the installed Asterisk prompts")
    p.add_argument("--transcripts", help="prompt list, plain or .gz: 'key: text' lines (';' comments), Festvox's "
                                         "txt.done.data or LJSpeech's metadata.csv (default: the Asterisk one)")
    p.add_argument("--output", required=True, help="corpus folder (train/ and test/ are written inside)")
    p.add_argument("--held-out", type=_fraction, default=0.2, help="fraction of distinct texts held out (default 0.2)")
    p.add_argument("--seed", type=int, default=0, help="seed for choosing the held-out texts (default 0)")
    p.add_argument("--format", dest="audio_format", help="read only audio files with this extension (g722, gsm, wav, "
                        "...; needed where a key has several; default for the Asterisk prompts: g722)")
    p.add_argument("--voice", help="speaker name, the sub-folder clips go in (default: the audio folder's name, "
                                   "or its parent's for a folder named wav, wavs, audio, ...)")
    p.add_argument("--force", action="store_true", help="replace an earlier import of other inputs in --output")
    args = p.parse_args(argv)
    if (args.audio is None) != (args.transcripts is None):
        raise DataError("--audio and --transcripts go together (give neither to import the installed Asterisk prompts)")
    from lora.data.prompts import asterisk_problem, check_format, import_prompts, installed_asterisk

    if args.audio_format is not None:
        args.audio_format = check_format(args.audio_format)[1:]
    if args.audio is None:
        args.audio_format = args.audio_format or "g722"
        found = installed_asterisk(args.audio_format)
        if found is None:
            raise DataError(asterisk_problem(args.audio_format) or "the Asterisk prompts are not installed")
        args.audio, args.transcripts = found
    s = import_prompts(args.audio, args.transcripts, args.output, held_out=args.held_out, seed=args.seed,
                       voice=args.voice, force=args.force, audio_format=args.audio_format)
    c, out = s["counts"], s["output"]
    print(f"kept {c['kept']} of {c['listed']} listed prompts: train {c['train']} clips ({c['texts']['train']} texts, "
          f"{s['seconds']['train'] / 60:.1f} min), test {c['test']} clips ({c['texts']['test']} texts, "
          f"{s['seconds']['test'] / 60:.1f} min)")
    print(f"dropped {sum(c['dropped'].values())}: "
          + (", ".join(f"{n} {why}" for why, n in c["dropped"].items()) or "none"))
    print(f"listed without audio: {c['listed_without_audio']}; audio without a listed key: {c['audio_without_key']}")
    fixes = [f"{k} ({', '.join(f)})" for k, f in s["corrected"].items()]
    print(f"corrected {len(fixes)}: {'; '.join(fixes) or 'none'}")
    print(f"{s['description']}; licence: {s['licence'] or 'unknown'}")
    print(f"use: --source folder:{out}/train --test-source folder:{out}/test")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
