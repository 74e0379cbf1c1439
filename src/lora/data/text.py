"""Text as the toolkit compares it: one definition each for scoring (WER) and for sentence identity (the split).

* :func:`normalize` is what WER is computed on: the Whisper English normalizer
  (``transformers.models.whisper.english_normalizer.EnglishTextNormalizer``: lower case, no punctuation, spelled-out
  numbers to digits, titles and contractions standardized), runs of spaces as one.
* :func:`sentence_key` is what makes two clips "the same sentence" for the split, the held-out checks and the
  prompt importer: lower case, letters, digits and spaces only, runs of spaces as one. It is deliberately simpler
  than :func:`normalize` (no number spelling), so it does not depend on transformers.
"""

from __future__ import annotations

import re
from functools import lru_cache


@lru_cache(maxsize=1)
def _normalizer():
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    return EnglishTextNormalizer({})


def normalize(text: str) -> str:
    return " ".join(_normalizer()(text).split())


def words(text: str) -> int:
    """Words of ``text`` as WER counts them."""
    return len(normalize(text).split())


def sentence_key(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]", "", text.lower()).split())


def list_lines(path, what: str, item: str) -> list[tuple[int, str]]:
    """(line number, text) of a UTF-8 file of one ``item`` per line, ``#`` starting a comment, blank lines skipped.
    A missing or unreadable file is refused as ``what`` (e.g. ``--terms FILE``) in one line."""
    from pathlib import Path

    from lora.errors import DataError

    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{what}: no such file; give a text file with one {item} per line") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{what}: cannot be read as UTF-8 text ({exc.__class__.__name__})") from None
    return [(n, text) for n, line in enumerate(lines, 1) if (text := line.split("#", 1)[0].strip())]
