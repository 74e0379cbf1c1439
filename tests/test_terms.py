"""Key terms scored apart from the other words (--terms): recall, extra, WER on the other words; refusals; the
verify_run check and the report table on a run folder made by hand."""

from __future__ import annotations

import json

import pytest

from lora.errors import DataError
from lora.evaluation.terms import check_terms_held_out, occurrences, read_terms, score_run, term_scores, terms_line


def test_recall_counts_whole_words_after_normalizing_and_each_occurrence_once():
    refs = ["Restart Redis, then PostgreSQL.", "Redis and redis again", "Rediscover the Argo CD app"]
    hyps = ["restart redis then postgres", "Redis and red is again", "rediscover the argo cd app"]
    s = term_scores(refs, hyps, ["Redis", "PostgreSQL", "Argo CD"])
    assert s["terms"]["Redis"] == {"occurrences": 3, "found": 2, "extra": 0, "recall": 2 / 3}  # not in "Rediscover"
    assert s["terms"]["PostgreSQL"]["found"] == 0 and s["terms"]["Argo CD"]["recall"] == 1.0
    assert (s["occurrences"], s["found"], s["recall"]) == (5, 3, 0.6)


def test_a_term_written_where_it_was_not_said_is_extra_not_found():
    s = term_scores(["check the pool"], ["check the kafka pool"], ["Kafka"])
    assert s["terms"]["Kafka"] == {"occurrences": 0, "found": 0, "extra": 1, "recall": None}
    assert s["recall"] is None and s["extra"] == 1
    assert s["other_wer"] == 0.0  # the inserted word is a term: its error is the term's


def test_wer_on_the_other_words_leaves_a_misheard_term_to_the_term():
    # "kubectl" misheard as one word, then as two: the other words are right in both
    for hyp in ("use uschubectil logs now", "use cube cuttle logs now"):
        s = term_scores(["use kubectl logs now"], [hyp], ["kubectl"])
        assert s["found"] == 0 and s["other_words"] == 3
    assert term_scores(["use kubectl logs now"], ["use uschubectil logs now"], ["kubectl"])["other_wer"] == 0.0
    # an error on another word counts against the other words
    s = term_scores(["use kubectl logs now"], ["use kubectl log now"], ["kubectl"])
    assert s["found"] == 1 and s["other_wer"] == pytest.approx(1 / 3)
    # an empty transcript: every other word deleted
    assert term_scores(["use kubectl logs now"], [""], ["kubectl"])["other_wer"] == 1.0


def test_the_terms_file_comments_blank_lines_and_duplicates(tmp_path):
    f = tmp_path / "terms.txt"
    f.write_text("# my terms\nkubectl\n\nArgo CD  # two words\nKUBECTL\n")
    assert read_terms(f) == ["kubectl", "Argo CD"]
    assert occurrences(["kubectl get pods", "argo cd sync, kubectl"], ["kubectl", "Argo CD"]) == {"kubectl": 2,
                                                                                                 "Argo CD": 1}


@pytest.mark.parametrize("text,msg", [(None, "no such file"), ("# only a comment\n", "no terms"),
                                      ("kubectl\n!!!\n", "line 2: '!!!' has no word left"),
                                      (b"caf\xe9\n", "cannot be read as UTF-8")])
def test_a_terms_file_that_cannot_be_used_is_refused_naming_it(tmp_path, text, msg):
    f = tmp_path / "terms.txt"
    if isinstance(text, bytes):
        f.write_bytes(text)
    elif text is not None:
        f.write_text(text)
    with pytest.raises(DataError, match=msg) as e:
        read_terms(f)
    assert str(f) in str(e.value)


def test_terms_the_held_out_set_never_uses_are_listed_or_refused():
    assert check_terms_held_out(["Redis", "Kafka"], ["restart redis"], "t.txt") == ["Kafka"]
    with pytest.raises(DataError, match="none of its 1 terms occurs in the held-out set"):
        check_terms_held_out(["Kafka"], ["restart redis"], "t.txt")


def _run(tmp_path, base_hyps, tuned_hyps, refs, terms):
    run = tmp_path / "run"
    run.mkdir(parents=True)
    for name, hyps in (("predictions_baseline.jsonl", base_hyps), ("predictions_tuned.jsonl", tuned_hyps)):
        (run / name).write_text("".join(json.dumps({"id": f"{i}", "reference": r, "prediction": h}) + "\n"
                                        for i, (r, h) in enumerate(zip(refs, hyps, strict=True))))
    block = {"file": "terms.txt", "listed": terms, "absent_from_test": [], "train_occurrences": {t: 1 for t in terms},
             **score_run(run, terms)}
    (run / "real_metrics.json").write_text(json.dumps({"status": "complete", "terms": block}))
    return run, {"terms": block}


def test_verify_run_recomputes_the_recall_and_fails_when_tuning_lost_terms(tmp_path):
    from lora.scripts.verify_run import _terms, _terms_checks

    refs = ["restart redis now", "the kafka lag"]
    run, m = _run(tmp_path, ["restart redis now", "the car ka lag"], ["restart redis now", "the kafka lag"], refs,
                  ["Redis", "Kafka"])
    assert [name for name, _ in _terms_checks(run, {}, False)] == ["terms: recall as recorded, not lower after tuning"]
    ok, line = _terms(run, m, relaxed=False)
    assert ok and "recall 1/2 (50.0%) -> 2/2 (100.0%)" in line, line
    # the recorded numbers must be what the predictions give
    m["terms"]["tuned"]["found"] = 1
    assert _terms(run, m, relaxed=False) == (False, "the recall recomputed from the predictions files differs from "
                                                    "real_metrics.json's")
    # fewer terms found after tuning: a failure naming them, and what to do
    run2, m2 = _run(tmp_path / "b", ["restart redis now", "the kafka lag"], ["restart red is now", "the kafka lag"],
                    refs, ["Redis", "Kafka"])
    ok, line = _terms(run2, m2, relaxed=False)
    assert not ok and "fewer found after tuning: Redis. fix: add training sentences" in line, line
    assert _terms(run2, m2, relaxed=True)[0] is True


def test_a_run_without_terms_gets_no_terms_check(tmp_path):
    from lora.scripts.verify_run import _terms_checks

    (tmp_path / "real_metrics.json").write_text(json.dumps({"status": "complete", "terms": None}))
    assert _terms_checks(tmp_path, {}, False) == [] and _terms_checks(tmp_path / "nope", {}, False) == []


def test_the_report_has_a_row_per_measured_term_and_the_summary_line(tmp_path):
    from lora.scripts.report import terms_section

    run, m = _run(tmp_path, ["restart redis now", "the car ka lag"], ["restart redis now", "the kafka lag"],
                  ["restart redis now", "the kafka lag"], ["Redis", "Kafka", "Helm"])
    m["terms"]["absent_from_test"] = ["Helm"]
    text = "\n".join(terms_section(m))
    assert "| Kafka | 1 | 0/1 (0.00%) | 1/1 (100.00%) | 0 -> 0 |" in text, text
    assert "| Helm |" not in text and "Not in the held-out set (no recall measured): Helm." in text
    assert terms_section({"terms": None}) == []
    line = terms_line(m["terms"]["baseline"], m["terms"]["tuned"])
    assert line.startswith("terms: recall 1/2 (50.0%) -> 2/2 (100.0%) on 2 terms in the held-out set"), line
