"""Sources: manifests, LibriSpeech folders, the streaming path (on a local parquet), split names."""

from __future__ import annotations

import json
import time

import pytest
import soundfile as sf

from lora.data import sources as S
from lora.errors import DataError
from lora.storage.cache import hub_offline_reason
from tests.conftest import tone


def _manifest(tmp_path, rows, name="m.jsonl"):
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_manifest_relative_and_absolute_paths(tmp_path):
    (tmp_path / "a").mkdir()
    sf.write(tmp_path / "a" / "one.wav", tone(1.0), 16000)
    sf.write(tmp_path / "two.flac", tone(1.0, 300), 16000)
    path = _manifest(tmp_path, [{"audio": "a/one.wav", "text": "one", "speaker": "s1"},
                                {"audio": str(tmp_path / "two.flac"), "text": "two", "id": "x2"}])
    utts = list(S.read_manifest(path))
    assert [u.id for u in utts] == ["a-one", "x2"]
    assert [u.speaker for u in utts] == ["s1", "unknown"]
    assert all(abs(u.duration - 1.0) < 1e-3 for u in utts)


def test_manifest_rows_without_id_are_named_by_their_path_under_the_manifest(tmp_path):
    """Two days of a recorder's 0001.wav are two clips; a file outside the manifest's folder keeps its name."""
    for day in ("day1", "day2", "elsewhere"):
        (tmp_path / day).mkdir()
        sf.write(tmp_path / day / "0001.wav", tone(1.0, 200 + len(day)), 16000)
    (tmp_path / "m").mkdir()
    path = _manifest(tmp_path / "m", [{"audio": str(tmp_path / "day1" / "0001.wav"), "text": "one"},
                                      {"audio": "../day2/0001.wav", "text": "two"}])
    assert [u.id for u in S.read_manifest(path)] == ["0001", "0001"]  # both outside m/: the file name
    path = _manifest(tmp_path, [{"audio": "day1/0001.wav", "text": "one"},
                                {"audio": str(tmp_path / "day2" / "0001.wav"), "text": "two"}])
    assert [u.id for u in S.read_manifest(path)] == ["day1-0001", "day2-0001"]


def test_manifest_bad_json_reports_line_number(tmp_path):
    sf.write(tmp_path / "one.wav", tone(1.0), 16000)
    path = _manifest(tmp_path, [{"audio": "one.wav", "text": "one"}, "{not json"])
    with pytest.raises(DataError, match=r"m.jsonl:2: not valid JSON"):
        list(S.read_manifest(path))


def test_manifest_missing_audio_names_line_and_file(tmp_path):
    path = _manifest(tmp_path, [{"audio": "gone.wav", "text": "x"}])
    with pytest.raises(DataError, match=r"m.jsonl:1: audio file not found: .*gone.wav"):
        list(S.read_manifest(path))


def test_manifest_row_without_audio_field(tmp_path):
    path = _manifest(tmp_path, [{"text": "x"}])
    with pytest.raises(DataError, match=r"m.jsonl:1: missing 'audio'"):
        list(S.read_manifest(path))


def test_csv_and_tsv_manifests(tmp_path):
    sf.write(tmp_path / "one.wav", tone(1.0), 16000)
    (tmp_path / "m.csv").write_text("audio,text,speaker\none.wav,\"hello, world\",s9\n")
    (tmp_path / "m.tsv").write_text("audio\ttext\none.wav\thello\n")
    assert [u.text for u in S.read_manifest(tmp_path / "m.csv")] == ["hello, world"]
    assert [u.text for u in S.read_manifest(tmp_path / "m.tsv")] == ["hello"]


def test_librispeech_dir_layout(tmp_path):
    for spk in ("19", "26"):
        d = tmp_path / spk / "198"
        d.mkdir(parents=True)
        sf.write(d / f"{spk}-198-0000.flac", tone(1.0), 16000)
        (d / f"{spk}-198.trans.txt").write_text(f"{spk}-198-0000 HELLO THERE\n")
    utts = list(S.read_librispeech_dir(tmp_path))
    assert [(u.id, u.speaker, u.text) for u in utts] == [("19-198-0000", "19", "HELLO THERE"),
                                                         ("26-198-0000", "26", "HELLO THERE")]


def test_librispeech_dir_without_transcripts(tmp_path):
    with pytest.raises(DataError, match="trans.txt"):
        list(S.read_librispeech_dir(tmp_path))


@pytest.mark.parametrize("config,split,valid", [("clean", "train.500", "train.100"),
                                                ("other", "train.100", "train.500"),
                                                ("all", "train.100", "train.clean.100"), ("dirty", "test", "clean")])
def test_unknown_split_lists_valid_before_streaming(config, split, valid):
    with pytest.raises(DataError, match=valid):
        next(S.stream_librispeech(config, split))


def test_hub_unreachable_fails_fast_with_offline_alternative(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(DataError, match="--preset offline"):
        next(S.stream_librispeech("clean", "train.100"))
    assert time.perf_counter() - t0 < 5


def test_hub_unreachable_without_offline_flags(monkeypatch):
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://unreachable.invalid")
    assert "unreachable.invalid" in hub_offline_reason()


@pytest.mark.slow
def test_streaming_path_on_local_parquet(tmp_path):
    """The same stream_librispeech code, fed a LibriSpeech-shaped parquet instead of the hub."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    for i in range(12):
        buf = io.BytesIO()
        sf.write(buf, tone(1.0 + i / 10, 200 + 10 * i, sr=16000), 16000, format="FLAC")
        rows.append({"file": f"{i}.flac", "audio": {"bytes": buf.getvalue(), "path": f"{i}.flac"},
                     "text": f"WORD {i}", "speaker_id": 100 + i % 4, "chapter_id": 1, "id": f"{100 + i % 4}-1-{i:04d}"})
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    first = list(S.stream_librispeech(n=5, seed=3, buffer=8, repo="parquet", data_files={"train": str(path)},
                                      split="train"))
    again = list(S.stream_librispeech(n=5, seed=3, buffer=8, repo="parquet", data_files={"train": str(path)},
                                      split="train"))
    assert len(first) == 5 and [u.id for u in first] == [u.id for u in again]
    assert all(u.speaker.startswith("10") and u.audio.size >= 16000 and S.A.problem(u.audio, u.text) is None
               for u in first)


def test_parse_spec_errors():
    with pytest.raises(DataError, match="valid: librispeech"):
        S.parse_spec("youtube:abc")
    with pytest.raises(DataError, match="needs a path"):
        S.parse_spec("manifest")


def test_folder_source_reads_pairs_with_speakers_from_subfolders(tmp_path):
    for rel, text in (("a.wav", "one"), ("b.flac", "two"), ("alice/c.wav", "three")):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(tmp_path / rel, tone(1.0), 16000)
        (tmp_path / rel).with_suffix(".txt").write_text(text + "\n")
    (tmp_path / "notes.md").write_text("ignored")
    utts = list(S.load_source(f"folder:{tmp_path}"))
    assert [(u.id, u.text, u.speaker) for u in utts] == [("a", "one", tmp_path.name), ("alice-c", "three", "alice"),
                                                          ("b", "two", tmp_path.name)]
    assert utts[0].extra["path"] == str((tmp_path / "a.wav").resolve())
    assert S.describe(f"folder:{tmp_path}").synthesized is False


def test_audiofolder_metadata_csv_and_jsonl(tmp_path):
    (tmp_path / "sub").mkdir()
    for rel in ("a.wav", "sub/b.wav", "sub/c.wav"):
        sf.write(tmp_path / rel, tone(1.0, 300), 16000)
    (tmp_path / "metadata.csv").write_text("file_name,transcription,speaker_id\na.wav,\"hi, there\",7\n")
    (tmp_path / "sub" / "metadata.jsonl").write_text('{"file_name": "b.wav", "text": "bee"}\n'
                                                      '{"file_name": "c.wav", "sentence": "sea"}\n')
    utts = list(S.load_source(f"audiofolder:{tmp_path}"))
    assert [(u.id, u.text, u.speaker) for u in utts] == [("a", "hi, there", "7"), ("sub-b", "bee", tmp_path.name),
                                                          ("sub-c", "sea", tmp_path.name)]
    (tmp_path / "sub" / "metadata.jsonl").write_text('{"file_name": "gone.wav", "text": "x"}\n')
    with pytest.raises(DataError, match=r"metadata.jsonl:1: audio file not found: .*gone.wav"):
        list(S.load_source(f"audiofolder:{tmp_path}"))


def test_synthesized_marker_and_librispeech_split_in_the_spec(tmp_path):
    (tmp_path / "corpus.json").write_text(json.dumps({"synthesized": True, "engine": "eSpeak NG text-to-speech: 1.51",
                                                      "voices": [{"name": "en-us"}]}))
    info = S.describe(f"folder:{tmp_path}")
    assert info.synthesized and info.description.startswith("synthesized speech (eSpeak NG text-to-speech, 1 voice)")
    assert S.describe(f"manifest:{tmp_path / 'm.jsonl'}").synthesized  # a manifest beside the marker
    assert "LibriSpeech clean/test streamed" in S.describe("librispeech:test").description


def test_written_manifest_keeps_every_clip_inside_its_folder_whatever_the_ids(tmp_path):
    """Ids come from users' manifests: a path, '..', a case twin (one file on macOS), 300 characters."""
    from lora.data.manifest import audio_dir_for, write_manifest

    ids = ["ok-1", "spk/utt", "../../escape", "Take", "take", "x" * 300, ".hidden"]
    utts = [S.Utterance(uid, tone(0.5 + 0.1 * i, 200 + 30 * i), f"clip {i}", "s") for i, uid in enumerate(ids)]
    path = tmp_path / "run" / "m.jsonl"
    rows = write_manifest(path, utts)
    folder = audio_dir_for(path)
    files = sorted(p.name for p in folder.iterdir())
    assert len({f.lower() for f in files}) == len(ids) and all(p.is_file() for p in folder.iterdir())
    assert set(tmp_path.iterdir()) == {path.parent} and set(path.parent.iterdir()) == {folder, path}
    assert rows[0]["audio"] == "m_audio/ok-1.wav" and rows[3]["audio"] == "m_audio/Take.wav"
    back = list(S.load_source(f"manifest:{path}"))
    assert [u.id for u in back] == ids
    assert all(abs(b.duration - u.duration) < 1e-3 for b, u in zip(back, utts, strict=True))
