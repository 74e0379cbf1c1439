"""What tuning changed, clip by clip, read from the run folder the job wrote (nothing is recomputed but the per-clip
word alignment): each held-out clip with its reference, the base and tuned transcripts, a word-level diff of each
against the reference, per-clip WER and the change, as NeMo's Speech Data Explorer shows a corpus; the run's
held-out WER, term recall and what it cost above them.

Per-clip WER and the diff are on normalized text (:func:`lora.data.text.normalize`), as the run's WER is.
"""

from __future__ import annotations

import html
from pathlib import Path

FILTERS = ("all", "better", "worse", "unchanged")


def _diff(reference: str, hypothesis: str) -> str:
    """``hypothesis`` as HTML against ``reference``: a substituted word shows both, a missing one struck through, an
    extra one underlined."""
    import jiwer

    from lora.data.text import normalize

    ref, hyp = normalize(reference), normalize(hypothesis)
    if not ref:
        return html.escape(hyp)
    if not hyp:
        return f"<del>{html.escape(ref)}</del>"
    out = jiwer.process_words(ref, hyp)
    r, h = out.references[0], out.hypotheses[0]
    parts = []
    for chunk in out.alignments[0]:
        rw = html.escape(" ".join(r[chunk.ref_start_idx:chunk.ref_end_idx]))
        hw = html.escape(" ".join(h[chunk.hyp_start_idx:chunk.hyp_end_idx]))
        parts.append(hw if chunk.type == "equal" else f"<del>{rw}</del>" if chunk.type == "delete" else
                     f"<ins>{hw}</ins>" if chunk.type == "insert" else f"<b>{hw}</b> <del>{rw}</del>")
    return " ".join(parts)


def clips(run: Path) -> list[dict]:
    """The held-out clips of a finished run: id, audio path, reference, both transcripts, both WERs, the change."""
    from lora.evaluation.evaluate import utterance_wer
    from lora.storage import artifacts as R

    audio = {r["id"]: run / r["audio"] for r in R.read_jsonl(run / R.HELDOUT)}
    base = {r["id"]: r["prediction"] for r in R.read_jsonl(run / R.PRED_BASELINE)}
    rows = []
    for r in R.read_jsonl(run / R.PRED_TUNED):
        before, after = utterance_wer(r["reference"], base[r["id"]]), utterance_wer(r["reference"], r["prediction"])
        rows.append({"id": r["id"], "audio": audio[r["id"]], "reference": r["reference"], "base": base[r["id"]],
                     "tuned": r["prediction"], "base_wer": before, "tuned_wer": after, "change": after - before})
    return rows


def table_html(rows: list[dict], which: str = "all") -> str:
    """The clips as an HTML table, worst change first, kept by ``which`` (:data:`FILTERS`)."""
    keep = {"all": lambda c: True, "better": lambda c: c["change"] < 0, "worse": lambda c: c["change"] > 0,
            "unchanged": lambda c: c["change"] == 0}[which]
    shown = sorted((c for c in rows if keep(c)), key=lambda c: (-c["change"], c["id"]))
    body = "".join(
        f"<tr><td>{html.escape(c['id'])}</td><td>{html.escape(c['reference'])}</td>"
        f"<td>{_diff(c['reference'], c['base'])}</td><td>{_diff(c['reference'], c['tuned'])}</td>"
        f"<td>{c['base_wer']:.0%}</td><td>{c['tuned_wer']:.0%}</td><td>{c['change'] * 100:+.0f}</td></tr>"
        for c in shown)
    return ("<style>#review-table td { word-break: break-word; vertical-align: top; }</style>"
            "<table id='review-table'><tr><th>clip</th><th>reference</th><th>base</th><th>tuned</th>"
            f"<th>base WER</th><th>tuned WER</th><th>change (points)</th></tr>{body}</table>"
            f"<p>{len(shown)} of {len(rows)} held-out clips. In a transcript: <b>word</b> <del>reference</del> for "
            "a substitution, <del>missing</del>, <ins>extra</ins>.</p>")


def summary(run: Path) -> str:
    """The run's headline, what it cost and its terms, in the words the CLI's summary uses."""
    from lora.evaluation.cost import quiet_line, recorded_line
    from lora.evaluation.terms import terms_line
    from lora.model.random_init import weights_line
    from lora.storage import artifacts as R

    m = R.read_json(run / R.METRICS)
    b, t, cost = m["baseline"], m["tuned"], m["cost"]
    lines = [f"**Held-out WER {b['wer']:.2%} -> {t['wer']:.2%}** (raw {b['wer_raw']:.2%} -> {t['wer_raw']:.2%}) on "
             f"{t['utterances']} clips held out of training; test loss {b['test_loss']:.4f} -> {t['test_loss']:.4f}"]
    if R.model_of(m)["random_weights"]:
        lines.insert(0, f"**{weights_line(R.model_of(m)['random_weights'])}**")
    if m.get("terms"):
        lines.append(terms_line(m["terms"]["baseline"], m["terms"]["tuned"]))
    lines += [f"What it cost: {quiet_line(cost['quiet'])}"] + [
        f"Canary {n}: WER {c['baseline']['wer']:.2%} -> {c['tuned']['wer']:.2%} ({c['regression']:+.1%} relative)"
        for n, c in cost["canaries"].items() if not c.get("skipped")]
    if "recorded" in cost:
        lines.append(recorded_line(cost["recorded"], cost["max_regression"]))
    return "\n\n".join(lines)
