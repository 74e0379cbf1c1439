"""Evaluation: held-out loss, transcripts and WER; canaries (what tuning cost)."""
