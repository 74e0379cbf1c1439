"""python -m lora.scripts.synth_corpus: speak a sentence list with several espeak-ng voices (LibriSpeech layout).

Each voice is one speaker; output is deterministic and cached (a rerun with the same inputs
does nothing). Use it as --source synth:DIR. The audio is synthesized speech, and reports say so.
``--voice NAME`` instead speaks every sentence with that one voice into a plain folder of
``0000.wav`` + ``0000.txt`` pairs (use it as --source folder:DIR): a stand-in for one person's
recordings of their own sentences.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lora.errors import cli_main


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lora.scripts.synth_corpus", description=__doc__.splitlines()[0])
    p.add_argument("--output", required=True, help="corpus folder")
    p.add_argument("--sentences", help="one sentence per line (default: the 446 shipped sentences)")
    p.add_argument("--voices-per-sentence", type=int, default=2, help="voices speaking each sentence (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed for assigning voices to sentences (default 0)")
    p.add_argument("--voice", help="one espeak-ng voice (e.g. en-us) for every sentence, written as a folder of "
                                   "name.wav + name.txt pairs")
    args = p.parse_args(argv)
    from lora.data.synth import read_sentences, synthesize_corpus, synthesize_folder

    sentences = read_sentences(args.sentences) if args.sentences else None
    if args.voice:
        synthesize_folder(args.output, sentences, args.voice)
    else:
        synthesize_corpus(args.output, sentences, voices_per_sentence=args.voices_per_sentence, seed=args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
