"""Decode an exported folder with onnxruntime, step by step the way moonshine-cpp does (``moonshine-model.cpp``:
first step ``use_cache_branch=False`` with placeholder caches of shape ``[1, heads, 1, head_dim]``, then one token at
a time), so a parity check exercises both branches of the merged decoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

START, EOS = 1, 2


class OrtMoonshine:
    def __init__(self, folder: Path, suffix: str = "onnx"):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.encoder = ort.InferenceSession(str(folder / f"encoder_model.{suffix}"), options,
                                            providers=["CPUExecutionProvider"])
        self.decoder = ort.InferenceSession(str(folder / f"decoder_model_merged.{suffix}"), options,
                                            providers=["CPUExecutionProvider"])
        self.cache_names = [i.name for i in self.decoder.get_inputs() if i.name.startswith("past_key_values.")]
        shape = next(i.shape for i in self.decoder.get_inputs() if i.name.startswith("past_key_values."))
        self.placeholder = np.zeros((1, shape[1], 1, shape[3]), dtype=np.float32)

    def encode(self, audio: np.ndarray) -> np.ndarray:
        return self.encoder.run(None, {"input_values": audio[None].astype(np.float32)})[0]

    def step(self, ids, hidden, cache: dict, first: bool):
        out = self.decoder.run(None, {"input_ids": np.asarray([ids], dtype=np.int64), "encoder_hidden_states": hidden,
                                      "use_cache_branch": np.array([not first]), **cache})
        return out[0], dict(zip(self.cache_names, out[1:], strict=True))

    def first_logits(self, audio: np.ndarray, hidden: np.ndarray | None = None) -> np.ndarray:
        """The first decoding step's logits (``hidden``: the clip's encoding, when already computed)."""
        hidden = self.encode(audio) if hidden is None else hidden
        return self.step([START], hidden, dict.fromkeys(self.cache_names, self.placeholder), True)[0]

    def greedy(self, audio: np.ndarray, max_new_tokens: int, hidden: np.ndarray | None = None) -> list[int]:
        hidden = self.encode(audio) if hidden is None else hidden
        cache = dict.fromkeys(self.cache_names, self.placeholder)
        tokens, ids = [START], [START]
        for step in range(max_new_tokens):
            logits, present = self.step(ids, hidden, cache, step == 0)
            nxt = int(logits[0, -1].argmax())
            tokens.append(nxt)
            if nxt == EOS:
                break
            ids = [nxt]
            # as the runtime: every cache from the first step, afterwards only the growing self-attention ones
            cache = {k: present[k] if step == 0 or ".decoder." in k else v for k, v in cache.items()}
        return tokens
