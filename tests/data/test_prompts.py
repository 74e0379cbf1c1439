"""Recorded prompts (a 'key: text' list + audio) imported as train/test folders: cleaning, split, layout, refusals."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lora.data import prompts as P
from lora.errors import DataError
from tests.conftest import tone

ROOT = Path(__file__).resolve().parents[2]
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
quiet = dict(log=lambda m: None)

LIST = """; test prompts
hello: Hello.
again: hello!

typo: All of our represenatives are busy...
note: [ascending tones]
digit: Press 1 now.
digits/ten: ten
missing: No audio for this one.
silent: Be very quiet.
s0: Good morning.
s1: Please hold while we connect you.
s2: Your call is important to us.
s3: The conference is now locked.
s4: Call-Forward on busy.
s5: ...has left the conference.
"""


@pytest.fixture()
def prompts(tmp_path) -> tuple[Path, Path]:
    audio = tmp_path / "Alice"
    (audio / "digits").mkdir(parents=True)
    keys = ["hello", "again", "typo", "note", "digit", "digits/ten", "extra", *(f"s{i}" for i in range(6))]
    for i, key in enumerate(keys):
        sf.write(audio / f"{key}.wav", tone(0.8, 150 + 25 * i), 16000)
    sf.write(audio / "silent.wav", np.zeros(16000, np.float32), 16000)
    listing = tmp_path / "prompts.txt.gz"
    listing.write_bytes(gzip.compress(LIST.encode()))
    return audio, listing


def _part(out: Path, key: str) -> str:
    return next(p for p in ("train", "test") if (out / p / "Alice" / f"{key}.wav").exists())


def test_read_prompt_list_plain_gz_comments_and_bad_lines(tmp_path, prompts):
    listed = P.read_prompt_list(prompts[1])
    assert listed["digits/ten"] == "ten" and listed["typo"].endswith("busy...") and len(listed) == 14
    (tmp_path / "p.txt").write_text("; c\n\na: one: two\n")
    assert P.read_prompt_list(tmp_path / "p.txt") == {"a": "one: two"}
    (tmp_path / "bad.txt").write_text("a: fine\nthis line has no key\n")
    with pytest.raises(DataError, match=r"bad.txt:2: expected 'key: text'"):
        P.read_prompt_list(tmp_path / "bad.txt")
    (tmp_path / "twice.txt").write_text("a: one\na: two\n")
    with pytest.raises(DataError, match=r"twice.txt:2: key 'a' is listed twice"):
        P.read_prompt_list(tmp_path / "twice.txt")
    with pytest.raises(DataError, match="transcripts file not found"):
        P.read_prompt_list(tmp_path / "none.txt")


def test_festvox_and_ljspeech_lists_are_read_by_their_first_line(tmp_path):
    done = tmp_path / "txt.done.data"
    done.write_text('( arctic_a0001 "Author of the danger trail, Philip Steels, etc." )\n'
                    '  ( arctic_a0002 "He said \\"no\\" twice." )\n')
    assert P.read_prompt_list(done) == {"arctic_a0001": "Author of the danger trail, Philip Steels, etc.",
                                        "arctic_a0002": 'He said "no" twice.'}
    meta = tmp_path / "metadata.csv"
    meta.write_text("LJ001-0001|Printed in 1455,|Printed in fourteen fifty-five,\nLJ001-0002|in being modern.|\n"
                    "LJ001-0003|two columns\n")
    assert P.read_prompt_list(meta) == {"LJ001-0001": "Printed in fourteen fifty-five,",
                                        "LJ001-0002": "in being modern.", "LJ001-0003": "two columns"}
    for name, text, layout in (("mixed.txt", '( a "one" )\nb: two\n', "Festvox's txt.done.data"),
                               ("mixed.csv", "a|one\nb: two\n", "LJSpeech's metadata.csv")):
        (tmp_path / name).write_text(text)
        with pytest.raises(DataError, match=rf"{name}:2: expected {re.escape(layout)} like its first line"):
            P.read_prompt_list(tmp_path / name)


def test_an_arctic_shaped_corpus_imports_under_its_corpus_name(tmp_path):
    root = tmp_path / "cmu_us_xyz_arctic"
    (root / "wav").mkdir(parents=True)
    (root / "etc").mkdir()
    lines = []
    texts = ["Author of the danger trail.", "Not at this particular case, Tom.",
             "For the twentieth time that evening the two men shook hands.", "Lord, but I'm glad to see you again."]
    for i, text in enumerate(texts):
        sf.write(root / "wav" / f"arctic_a{i:04d}.wav", tone(0.8, 150 + 25 * i), 16000)
        lines.append(f'( arctic_a{i:04d} "{text}" )')
    (root / "etc" / "txt.done.data").write_text("\n".join(lines) + "\n")
    s = P.import_prompts(root / "wav", root / "etc" / "txt.done.data", tmp_path / "out", held_out=0.25, **quiet)
    assert s["voices"] == ["cmu_us_xyz_arctic"] and s["counts"]["kept"] == 4 and s["counts"]["test"] == 1
    clip = next((tmp_path / "out" / "test" / "cmu_us_xyz_arctic").glob("*.txt"))
    assert clip.read_text().strip() in texts


@pytest.mark.parametrize("text,expected", [
    ("Please try again.", ("Please try again.", "")),
    ("Call-Forward on No Answer.", ("Call-Forward on No Answer.", "")),
    ("...to leave the conference.", ("to leave the conference.", "")),
    ("There are currently...", ("There are currently", "")),
    ("Press ...", ("Press", "")),
    ("I have a caller waiting, who introduces themselves as:",
     ("I have a caller waiting, who introduces themselves as", "")),
    ("A.M.", ("A.M.", "")),
    ("Represenatives are fourtieth.", ("Representatives are fortieth.", "")),
    ("Un-indentified or witheld", ("Un-identified or withheld", "")),
    ("[ascending tones]", (None, P.NOTE)),
    ("at [@]", (None, P.NOTE)),
    ("<beep ascending>", (None, P.NOTE)),
    ("(10 seconds of silence)", (None, P.NOTE)),
    ("Press 1 now.", (None, P.DIGITS)),
    ("press * to toggle pause", (None, P.SYMBOLS)),
    ("followed by # to exit", (None, P.SYMBOLS)),
    ("visit www.asterisk.org.", (None, P.WEB)),
    ("...", (None, P.NO_WORDS)),
    ("", (None, P.NO_WORDS)),
])
def test_clean_prompt(text, expected):
    assert P.clean_prompt(text) == expected


def test_import_counts_reasons_layout_and_corpus_json(tmp_path, prompts):
    from lora.data.sources import describe, load_source

    out = tmp_path / "out"
    s = P.import_prompts(*prompts, out, held_out=0.3, seed=0, **quiet)
    c = s["counts"]
    assert c["listed"] == 14 and c["kept"] == 10 and c["train"] + c["test"] == 10 and c["test"] >= 1
    assert c["texts"]["train"] + c["texts"]["test"] == 9  # "Hello." and "hello!" count once
    assert s["dropped"] == {"bracketed note": ["note"], "digits": ["digit"], "silent": ["silent"]}
    assert s["listed_without_audio"] == ["missing"] and s["audio_without_key"] == ["extra.wav"]
    assert s["corrected"] == {"typo": ["represenatives -> representatives"]}
    part = _part(out, "typo")
    assert (out / part / "Alice" / "typo.txt").read_text() == "All of our representatives are busy\n"
    assert _part(out, "hello") == _part(out, "again")
    assert (out / _part(out, "digits-ten") / "Alice" / "digits-ten.txt").read_text() == "ten\n"
    wav, sr = sf.read(out / part / "Alice" / "typo.wav", dtype="int16")
    assert sr == 16000 and sf.info(out / part / "Alice" / "typo.wav").subtype == "PCM_16" and wav.size == 12800
    for folder in (out, out / "train", out / "test"):
        meta = json.loads((folder / "corpus.json").read_text())
        assert meta["synthesized"] is False and meta["kind"] == "recorded" and meta["voices"] == ["Alice"]
        assert meta["licence"] is None and meta["held_out"] == 0.3 and meta["seed"] == 0
        assert meta["description"] == "recorded speech, 1 voice (Alice): prompts listed in prompts.txt.gz"
    assert json.loads((out / "test" / "corpus.json").read_text())["part"] == "test"
    assert sorted(p.name for p in out.iterdir()) == ["corpus.json", "test", "train"]
    info = describe(f"folder:{out}/train")
    assert not info.synthesized and info.description.startswith("recorded speech, 1 voice (Alice)")
    train = list(load_source(f"folder:{out}/train"))
    assert len(train) == c["train"] and {u.speaker for u in train} == {"Alice"}
    assert s["seconds"]["train"] == pytest.approx(0.8 * c["train"])


def test_held_out_by_text_seeded_and_deterministic(tmp_path, prompts):
    runs = [P.import_prompts(*prompts, tmp_path / name, held_out=0.3, seed=seed, **quiet)
            for name, seed in (("a", 0), ("b", 0), ("c", 1), ("d", 2), ("e", 3))]
    parts = [{k: _part(Path(r["output"]), k) for k in ("hello", "typo", "digits-ten", "s0", "s1", "s2", "s3")}
             for r in runs]
    assert parts[0] == parts[1]
    assert all((tmp_path / "a" / p).read_bytes() == (tmp_path / "b" / p).read_bytes()
               for p in ("corpus.json", "train/corpus.json", f"{parts[0]['hello']}/Alice/hello.wav"))
    assert any(p != parts[0] for p in parts[2:])  # another seed holds out other texts
    for r in runs:
        out = Path(r["output"])
        assert _part(out, "hello") == _part(out, "again")  # same text, same part, whatever the seed
    texts = {f"k{i}": f"Text number {'x' * i}." for i in range(20)} | {"dup": "TEXT number x"}
    held = P.held_out_keys(texts, 0.25, 0)
    assert len(held - {"dup"}) == 5 and ("dup" in held) == ("k1" in held)
    assert held == P.held_out_keys(dict(reversed(texts.items())), 0.25, 0)


def test_rerun_is_cached_and_an_existing_output_needs_force(tmp_path, prompts):
    out = tmp_path / "out"
    P.import_prompts(*prompts, out, **quiet)
    assert P.import_prompts(*prompts, out, **quiet)["reused"] is True
    with pytest.raises(DataError, match=r"holds an import of other inputs; pass --force"):
        P.import_prompts(*prompts, out, seed=5, **quiet)
    assert P.import_prompts(*prompts, out, seed=5, force=True, **quiet)["seed"] == 5
    other = tmp_path / "mine"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"\xff\xd8")
    for force in (False, True):
        with pytest.raises(DataError, match=r"not an imported prompt corpus; choose another folder \(--force only"):
            P.import_prompts(*prompts, other, force=force, **quiet)
    assert (other / "holiday.jpg").exists()


def test_corrupt_clip_fails_naming_it_and_leaves_no_output(tmp_path, prompts):
    audio, listing = prompts
    (audio / "s3.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    with pytest.raises(DataError, match=r"s3.wav: corrupt or unreadable audio"):
        P.import_prompts(audio, listing, tmp_path / "out", **quiet)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".tmp-*"))


def test_nothing_matching_or_missing_inputs_are_one_line_errors(tmp_path, prompts):
    audio, listing = prompts
    (tmp_path / "other.txt").write_text("zzz: nothing here\n")
    with pytest.raises(DataError, match=f"no audio file in {audio} matches a key of {tmp_path / 'other.txt'}"):
        P.import_prompts(audio, tmp_path / "other.txt", tmp_path / "out", **quiet)
    with pytest.raises(DataError, match="audio folder not found"):
        P.import_prompts(tmp_path / "nope", listing, tmp_path / "out", **quiet)
    with pytest.raises(DataError, match="held_out must be between 0 and 1"):
        P.import_prompts(audio, listing, tmp_path / "out", held_out=1.0, **quiet)
    assert not (tmp_path / "out").exists()


def _g722(src: Path, dst: Path) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(src), "-ar", "16000", "-f", "g722", str(dst)],
                   check=True)


@needs_ffmpeg
def test_g722_is_decoded_and_imported(tmp_path, prompts):
    from lora.data.audio import decode_file, problem

    audio, listing = prompts
    _g722(audio / "s0.wav", audio / "s0.g722")
    (audio / "s0.wav").unlink()
    clip = decode_file(audio / "s0.g722")
    assert abs(clip.size - 12800) < 400 and problem(clip, "x") is None
    s = P.import_prompts(audio, listing, tmp_path / "out", **quiet)
    assert (s["counts"]["kept"] == 10
            and (tmp_path / "out" / _part(tmp_path / "out", "s0") / "Alice" / "s0.txt").exists())


@needs_ffmpeg
@pytest.mark.parametrize("fmt, ffmpeg_out", [("gsm", ("-ar", "8000", "-f", "gsm")),
                                             ("ulaw", ("-ar", "8000", "-f", "mulaw")),
                                             ("alaw", ("-ar", "8000", "-f", "alaw"))])
def test_8khz_telephone_formats_decode_at_their_rate(tmp_path, fmt, ffmpeg_out):
    """Raw GSM and G.711 carry no header: decoded at 8 kHz (not the demuxer's 44.1 kHz guess), resampled by soxr."""
    from lora.data.audio import decode_file

    wav, raw = tmp_path / "x.wav", tmp_path / f"x.{fmt}"
    sf.write(wav, tone(0.8, 300), 16000)
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(wav), *ffmpeg_out, str(raw)], check=True)
    clip = decode_file(raw)
    assert abs(clip.size - 12800) < 400  # 0.8 s at 16 kHz
    spectrum = np.abs(np.fft.rfft(clip))
    assert abs(np.argmax(spectrum) * 16000 / clip.size - 300) < 10  # the tone's pitch survives: the rate is right


@needs_ffmpeg
def test_a_key_in_several_formats_needs_format(tmp_path, prompts):
    audio, listing = prompts
    for key in ("s0", "s1"):
        _g722(audio / f"{key}.wav", audio / f"{key}.g722")
    with pytest.raises(DataError, match=r"two audio files for key 's0': .*s0.g722 and .*s0.wav; pick one format "
                                        r"with --format g722"):
        P.import_prompts(audio, listing, tmp_path / "out", **quiet)
    s = P.import_prompts(audio, listing, tmp_path / "out", audio_format="wav", **quiet)
    assert s["counts"]["kept"] == 10 and s["counts"]["audio_without_key"] == 1  # the wav files only: as before
    only = P.import_prompts(audio, listing, tmp_path / "g", audio_format=".G722", **quiet)
    assert only["counts"]["kept"] == 2 and only["audio_without_key"] == []
    with pytest.raises(DataError, match=r"--format mp9: not an audio format the reader accepts \(wav, flac"):
        P.import_prompts(audio, listing, tmp_path / "x", audio_format="mp9", **quiet)


def test_g722_without_ffmpeg_names_the_install(tmp_path, monkeypatch):
    from lora.data.audio import decode_file

    (tmp_path / "x.g722").write_bytes(b"\x00" * 800)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(DataError, match=r"x.g722: raw g722 audio is decoded with ffmpeg .*apt-get install ffmpeg"):
        decode_file(tmp_path / "x.g722")


@pytest.mark.skipif(P.installed_asterisk() is None, reason="asterisk-core-sounds-en(-g722) or ffmpeg not installed")
def test_installed_asterisk_prompts():
    """The import the runs use: in the cache, where tests/conftest.py's shared_caches imported it before the first test
    (a fresh import of its 957 files took 35 s of CI's time again here)."""
    from lora.storage.cache import cache_root

    messages = []
    out = P.default_recorded_corpus(cache_root(), log=messages.append)
    meta = json.loads((out / "corpus.json").read_text())
    c = meta["counts"]
    assert c["kept"] >= 400 and c["test"] >= 50 and meta["licence"] == "CC-BY-SA-3.0"
    assert meta["description"] == ("recorded speech, 1 voice (en_US_f_Allison): Asterisk core sounds, "
                                   "G.722 telephone prompts")
    assert {"queue-periodic-announce", "digits/h-40", "unidentified-no-callback"} <= set(meta["corrected"])
    assert "beep" in meta["dropped"]["bracketed note"] and "silence/1" in meta["dropped"]["bracketed note"]
    texts = [p.read_text().strip() for p in out.rglob("*.txt")]
    assert len(texts) == c["kept"] and all(P.clean_prompt(t) == (t, "") for t in texts)
    assert "All of our representatives are currently busy." in " ".join(texts)
    assert P.default_recorded_corpus(cache_root(), log=messages.append) == out and "nothing to do" in messages[-1]


def test_cli_help_is_fast_and_bad_input_is_one_line(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    code = ("import sys, runpy; sys.argv=['x','--help']\ntry: runpy.run_module('lora.scripts.import_prompts', "
            "run_name='__main__')\nexcept SystemExit as e: assert not e.code\nassert 'torch' not in sys.modules")
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert proc.returncode == 0 and "usage:" in proc.stdout and "--held-out" in proc.stdout, proc.stderr
    assert time.monotonic() - start < 20
    proc = subprocess.run([sys.executable, "-m", "lora.scripts.import_prompts", "--audio", str(tmp_path), "--output",
                           str(tmp_path / "o")], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == ["error: --audio and --transcripts go together (give neither to import "
                                                "the installed Asterisk prompts)"]
