"""Fuzz: randomly corrupted audio files and manifests must only ever raise DataError.

Seeded, so a failure reproduces; each case is a mutation of a valid file (truncation, byte flips,
junk, wrong types, invalid UTF-8, odd paths). A crash with any other exception type is a bug.
"""

from __future__ import annotations

import contextlib
import io
import json
import random

import numpy as np
import pytest
import soundfile as sf

from lora.data import audio as A
from lora.data.prepare import screen
from lora.data.sources import read_manifest
from lora.errors import DataError
from tests.conftest import tone


def _valid_audio(fmt: str) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, tone(0.5), 16000, format=fmt, subtype="PCM_16")
    return buf.getvalue()


def _mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    kind = rng.choice(["truncate", "flip", "header", "junk", "zero", "empty"])
    if kind == "truncate":
        return bytes(b[: rng.randrange(len(b))])
    if kind == "flip":
        for _ in range(rng.randint(1, 40)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)
    if kind == "header":
        for i in range(rng.randint(1, 64)):
            b[i] = rng.randrange(256)
        return bytes(b)
    if kind == "junk":
        return bytes(b) + bytes(rng.randrange(256) for _ in range(rng.randint(1, 500)))
    if kind == "zero":
        start = rng.randrange(len(b))
        b[start:start + rng.randint(1, 4000)] = bytes(min(len(b) - start, 4000))
        return bytes(b)
    return b""


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["WAV", "FLAC"])
def test_corrupted_audio_raises_only_data_error(tmp_path, fmt):
    rng = random.Random(1234)
    valid = _valid_audio(fmt)
    for case in range(150):
        path = tmp_path / f"case{case}.{fmt.lower()}"
        path.write_bytes(_mutate_bytes(valid, rng))
        try:
            audio = A.decode_file(path)
        except DataError as exc:
            assert path.name in str(exc)
            continue
        assert audio.dtype == np.float32 and audio.ndim == 1
        A.problem(audio, "text")  # must not raise


_VALUES = [None, 1, 2.5, True, [], {}, "", "x" * 300, "\u0000", "../" * 50 + "x.wav", "nope.wav", "a.wav"]


def _mutate_row(row: dict, rng: random.Random) -> dict | list | str | int:
    row = dict(row)
    kind = rng.choice(["value", "drop", "extra", "type"])
    if kind == "value":
        row[rng.choice(["audio", "text", "speaker", "id"])] = rng.choice(_VALUES)
    elif kind == "drop":
        row.pop(rng.choice(list(row)), None)
    elif kind == "extra":
        row[rng.choice(["duration", "rms", "junk"])] = rng.choice(_VALUES)
    else:
        return rng.choice([[row], "row", 7, None])
    return row


def _mutate_text(text: str, rng: random.Random) -> bytes:
    data = bytearray(text.encode())
    for _ in range(rng.randint(1, 6)):
        op = rng.choice(["delete", "insert", "badutf8"])
        pos = rng.randrange(len(data) + 1)
        if op == "delete" and data:
            del data[min(pos, len(data) - 1)]
        elif op == "insert":
            data[pos:pos] = rng.choice([b"{", b"}", b'"', b",", b"\n", b":", b"\\"])
        else:
            data[pos:pos] = bytes([rng.choice([0xff, 0xfe, 0xc3, 0x80])])
    return bytes(data)


def test_corrupted_manifests_raise_only_data_error(tmp_path):
    rng = random.Random(99)
    sf.write(tmp_path / "a.wav", tone(1.0), 16000)
    (tmp_path / "bad.wav").write_bytes(b"RIFF????WAVEfmt ")
    base = [{"audio": "a.wav", "text": "hello there", "speaker": "s1", "id": f"u{i}"} for i in range(3)]
    outcomes = {"ok": 0, "error": 0}
    for case in range(300):
        path = tmp_path / f"m{case}.jsonl"
        if case % 2:
            lines = [json.dumps(_mutate_row(r, rng)) for r in base]
            path.write_text("\n".join(lines) + "\n")
        else:
            path.write_bytes(_mutate_text("\n".join(json.dumps(r) for r in base) + "\n", rng))
        try:
            utts = list(read_manifest(path))
            if utts:
                screen(utts)
            outcomes["ok"] += 1
        except DataError as exc:
            assert str(exc)
            outcomes["error"] += 1
    assert outcomes["ok"] > 10 and outcomes["error"] > 10  # both paths were exercised


def test_corrupted_csv_manifests_raise_only_data_error(tmp_path):
    rng = random.Random(7)
    sf.write(tmp_path / "a.wav", tone(1.0), 16000)
    text = "audio,text,speaker\na.wav,hello,s1\na.wav,\"quoted, text\",s2\n"
    for case in range(150):
        path = tmp_path / f"m{case}.csv"
        path.write_bytes(_mutate_text(text, rng))
        with contextlib.suppress(DataError):
            list(read_manifest(path))
