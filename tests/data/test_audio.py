"""Decoding and screening: real audio in, clear errors for anything else."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from lora.data import audio as A
from lora.errors import DataError
from tests.conftest import tone


@pytest.mark.parametrize("fmt,subtype", [("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("OGG", "VORBIS")])
def test_decodes_common_formats(tmp_path, fmt, subtype):
    path = tmp_path / f"clip.{fmt.lower()}"
    sf.write(path, tone(0.5), 16000, format=fmt, subtype=subtype)
    audio = A.decode_file(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(audio.size - 8000) < 400
    assert A.problem(audio, "text") is None


def test_resamples_wrong_sample_rate_and_mixes_stereo(tmp_path):
    stereo = np.stack([tone(1.0, sr=44100), tone(1.0, 330, sr=44100)], axis=1)
    path = tmp_path / "stereo44k.wav"
    sf.write(path, stereo, 44100)
    audio = A.decode_file(path)
    assert audio.ndim == 1 and abs(audio.size - 16000) <= 2
    # the 220 Hz component survives resampling: its spectral peak sits at 220 Hz
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(np.argmax(spectrum) * 16000 / audio.size - 220) < 5


def test_missing_file_names_it(tmp_path):
    with pytest.raises(DataError, match="not found: .*nope.wav"):
        A.decode_file(tmp_path / "nope.wav")


def test_corrupt_file_names_it(tmp_path):
    path = tmp_path / "broken.flac"
    sf.write(path, tone(1.0), 16000, format="FLAC")
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DataError, match="broken.flac"):
        A.decode_file(path)


def test_text_file_is_not_audio(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio")
    with pytest.raises(DataError, match="notes.wav"):
        A.decode_file(path)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
def test_ffmpeg_only_for_formats_soundfile_cannot_read(tmp_path):
    wav = tmp_path / "src.wav"
    sf.write(wav, tone(1.0), 16000)
    m4a = tmp_path / "clip.m4a"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(wav), str(m4a)], check=True)
    audio = A.decode_file(m4a)
    assert abs(audio.size - 16000) < 2000 and A.problem(audio, "x") is None


def test_without_ffmpeg_unknown_format_names_backend(tmp_path, monkeypatch):
    path = tmp_path / "clip.xyz"
    path.write_bytes(b"\x00\x01" * 100)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(DataError, match="ffmpeg"):
        A.decode_file(path)


@pytest.mark.parametrize("audio,text,reason", [
    (np.zeros(0, np.float32), "hello", "empty audio"),
    (np.zeros(16000, np.float32), "hello", "silent"),
    (np.full(16000, 1e-4, np.float32), "hello", "silent"),
    (tone(1.0), "", "empty transcript"),
    (tone(1.0), "   ", "empty transcript"),
    (tone(0.05), "hello", "shorter"),
    (np.full(16000, 0.5, np.float32), "hello", "constant"),
])
def test_problem_rejects_unusable(audio, text, reason):
    assert reason in A.problem(audio, text)


def test_zero_length_file_is_rejected_by_screening(tmp_path):
    from lora.data.prepare import screen
    from lora.data.sources import Utterance

    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, np.float32), 16000)
    empty = Utterance("e1", A.decode_file(path), "hi", "s")
    ok = Utterance("k1", tone(1.0), "hi", "s")
    res = screen([empty, ok])
    assert [u.id for u in res.kept] == ["k1"] and res.rejected == {"empty audio": ["e1"]}


def test_write_wav_roundtrip_is_exact_for_16bit_values(tmp_path):
    audio = np.round(tone(0.5) * 32767) / 32767
    A.write_wav(tmp_path / "x.wav", audio.astype(np.float32))
    back = A.decode_file(tmp_path / "x.wav")
    assert np.max(np.abs(back - audio)) < 1 / 32767
    assert not list(tmp_path.glob(".tmp-*"))
