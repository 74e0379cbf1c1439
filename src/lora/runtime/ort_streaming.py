"""Decode a Moonshine v2 export (the five graphs of ``moonshine_voice/lora/export.py``) with onnxruntime: the
frontend on the whole clip in one chunk, the encoder, the adapter at position 0, the cross-attention keys and
values once, then ``decoder_kv`` one token at a time with its growing self-attention cache. This is the export as
the graphs define it, for a parity check against PyTorch.

:meth:`OrtStreaming.as_runtime_reads` decodes what moonshine-voice 0.1.5's ``transcribe_without_streaming`` gives
the decoder, measured with its ``log_ort_run`` option and read in its source (``core/transcriber.cpp``,
``core/moonshine-streaming-model.cpp``): the audio in whole chunks of 1280 samples (80 ms; a shorter tail is never
read), and the encoder's frames without the last ``total_lookahead`` (16 frames, 320 ms: that path encodes with
``is_final`` false, so the frames still waiting for look-ahead are never emitted). On a 4-layer stand-in this
reproduced the runtime's transcripts 6 of 6 where the whole clip gave 4 of 6."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

GRAPHS = ("frontend", "encoder", "adapter", "cross_kv", "decoder_kv")
RUNTIME_CHUNK = 1280  # samples moonshine-voice feeds the frontend at a time (transcriber.cpp: chunk_size)


class OrtStreaming:
    def __init__(self, folder: Path, suffix: str = "onnx"):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.sessions = {g: ort.InferenceSession(str(folder / f"{g}.{suffix}"), options,
                                                 providers=["CPUExecutionProvider"]) for g in GRAPHS}
        self.config = json.loads((folder / "streaming_config.json").read_text())
        self.start, self.eos = self.config["bos_id"], self.config["eos_id"]

    def features(self, audio: np.ndarray, chunk: int | None = None) -> np.ndarray:
        """The frontend's features ``[1, frames, encoder_dim]`` for the whole clip, or fed ``chunk`` samples at a
        time with its state carried from call to call, as a streaming runtime feeds it."""
        frontend = self.sessions["frontend"]
        state = {name: np.zeros(shape, dtype=np.int64 if name in ("sample_len", "frame_count") else np.float32)
                 for name, shape in self.config["frontend_state_shapes"].items()}
        names = [o.name.removesuffix("_out") for o in frontend.get_outputs()[1:]]
        parts, step = [], chunk or audio.size
        for start in range(0, audio.size, step):
            out = frontend.run(None, {"audio_chunk": audio[None, start:start + step].astype(np.float32), **state})
            parts.append(out[0])
            state = dict(zip(names, out[1:], strict=True))
        return np.concatenate(parts, axis=1)

    def encode(self, audio: np.ndarray) -> np.ndarray:
        """Encoder states ``[1, frames, encoder_dim]`` of the whole clip."""
        return self.sessions["encoder"].run(None, {"features": self.features(audio)})[0]

    def memory_kv(self, encoded: np.ndarray):
        memory = self.sessions["adapter"].run(None, {"encoded": encoded, "pos_offset": np.zeros(1, np.int64)})[0]
        return self.sessions["cross_kv"].run(None, {"memory": memory})

    def as_runtime_reads(self, audio: np.ndarray, max_new_tokens: int) -> list[int]:
        """Greedy tokens of the audio as moonshine-voice reads it (see the module's docstring)."""
        audio = audio[: audio.size // RUNTIME_CHUNK * RUNTIME_CHUNK]
        if not audio.size:
            return [self.start]
        encoded = self.encode(audio)
        kept = encoded.shape[1] - self.config["total_lookahead"]
        return self.greedy(audio, max_new_tokens, encoded[:, :kept]) if kept > 0 else [self.start]

    def greedy(self, audio: np.ndarray, max_new_tokens: int, encoded: np.ndarray | None = None) -> list[int]:
        k_cross, v_cross = self.memory_kv(self.encode(audio) if encoded is None else encoded)
        c = self.config
        k_self = v_self = np.zeros((c["depth"], 1, c["nheads"], 0, c["head_dim"]), dtype=np.float32)
        tokens = [self.start]
        for _ in range(max_new_tokens):
            logits, k_self, v_self, _, _ = self.sessions["decoder_kv"].run(None, {
                "token": np.asarray([[tokens[-1]]], dtype=np.int64), "k_self": k_self, "v_self": v_self,
                "out_k_cross": k_cross, "out_v_cross": v_cross})
            tokens.append(int(logits[0, -1].argmax()))
            if tokens[-1] == self.eos:
                break
        return tokens
