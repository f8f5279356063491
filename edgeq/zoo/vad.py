"""``vad``: a recurrent voice-activity detector (Silero-style) and the loading of its checkpoint.

One call takes one chunk of raw audio (32 ms: 512 samples at 16 kHz, 256 at 8 kHz), the LSTM
state of the previous call and the sample rate, and returns the speech probability of the chunk
and the new state, which the caller feeds back on the next call:

    input (B, 512 | 256) float32, state (2, B, 64) float32 (h and c), sr () int64
    -> output (B, 1) speech probability, stateN (2, B, 64)

The sample rate picks the front-end: a learned filterbank (Conv1d, 32 filters of 8 ms: kernel
128 stride 64 at 16 kHz, kernel 64 stride 32 at 8 kHz; 7 positions either way), then Abs,
log(x + 1e-3), a 3-tap Conv1d over the positions, ReLU, the mean over positions; both rates share
the rest: an LSTM (32 -> 64) and a Linear + Sigmoid head. Any rate other than 16000 takes the
8 kHz path. The ONNX graph (``edgeq.zoo.vad_graph``) tests the rate with an ``If`` whose two
branches each hold a whole front-end + LSTM + head, like the VAD models shipped in the wild.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from edgeq.errors import ModelLoadError
from edgeq.zoo.vad_graph import CHECKPOINT

__all__ = ["VoiceActivityDetector", "CHECKPOINT", "build", "load", "example_inputs"]

FILTERS = 32
HIDDEN = 64
LOG_EPS = 1e-3


class VoiceActivityDetector(nn.Module):
    def __init__(self, filters: int = FILTERS, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.frontend16 = nn.Conv1d(1, filters, 128, 64)  # 16 kHz: 8 ms filters, hop 4 ms
        self.frontend8 = nn.Conv1d(1, filters, 64, 32)  # 8 kHz: the same in time
        self.encoder = nn.Conv1d(filters, filters, 3, padding=1)
        self.lstm = nn.LSTM(filters, hidden)
        self.head = nn.Linear(hidden, 1)

    def features(self, chunks: torch.Tensor, sr: int) -> torch.Tensor:
        """(N, samples) audio chunks -> (N, filters) features, the front-end of rate ``sr``."""
        frontend = self.frontend16 if sr == 16000 else self.frontend8
        bands = torch.log(frontend(chunks[:, None]).abs() + LOG_EPS)
        return torch.relu(self.encoder(bands)).mean(dim=2)

    def sequence(self, frames: torch.Tensor, sr: int) -> torch.Tensor:
        """Training: (B, T, samples) streams from a zero state -> (B, T) speech logits."""
        b, t, n = frames.shape
        feats = self.features(frames.reshape(b * t, n), sr).reshape(b, t, -1)
        out, _ = self.lstm(feats.transpose(0, 1))
        return self.head(out).squeeze(-1).transpose(0, 1)

    def forward(self, input: torch.Tensor, state: torch.Tensor, sr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.features(input, int(sr))
        out, (h, c) = self.lstm(feats[None], (state[0:1], state[1:2]))
        return torch.sigmoid(self.head(out[0])), torch.cat([h, c])


def build() -> VoiceActivityDetector:
    return VoiceActivityDetector()


def load() -> nn.Module:
    """The detector with its committed state_dict (``weights_only=True``), in eval mode."""
    model = build()
    if not os.path.isfile(CHECKPOINT):
        raise ModelLoadError(f"checkpoint {CHECKPOINT} is missing: run `python -m edgeq.zoo.train_vad` to train it")
    model.load_state_dict(torch.load(CHECKPOINT, map_location="cpu", weights_only=True))
    return model.eval()


def example_inputs() -> tuple[torch.Tensor, ...]:
    """One 16 kHz evaluation feed (a chunk inside a stream, with the state the stream left)."""
    from edgeq.zoo import vad_data

    feed = vad_data.eval_data(1, seed=0)[0]
    return tuple(torch.from_numpy(feed[name]) for name in ("input", "state", "sr"))
