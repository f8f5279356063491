"""Synthetic speech streams for the ``vad`` model, and its feeds with the LSTM state fed back.

numpy only for the audio (``edgeq.zoo.synth_speech``'s voiced vowels, nasals, fricatives and
bursts); the states come from onnxruntime on the model's own ONNX graph (``vad_graph``, built
from the checkpoint without torch), so no data path imports torch.

A stream is 3 s of audio (94 chunks of 32 ms): 0-1 s of silence, then utterances of one to three
words (ten keywords and random segment sequences; 30-150 ms between words) separated by
0.25-1.2 s of silence; before each utterance the speech stops with probability 0.1 (one stream
in ten has none, some end in a long silence). Speech is made at 8 kHz and, for a 16 kHz stream,
upsampled (band-limited: nothing above 4 kHz); noise (white, pink or brown, at the stream's own
rate) is added at 3-25 dB SNR against the speech; the stream is scaled to a peak of -30..0 dBFS
(loud and quiet). A chunk is speech (label 1) when at least half of it lies inside an utterance.

A feed is one chunk of a stream with the state the stream left: each stream runs chunk by chunk
from a zero state through the fp32 model, and at most 8 chunks per stream, drawn at random, become
feeds ``{input (1, 512), state (2, 1, 64), sr ()}`` (16 kHz by default; ``sr=8000``: (1, 256)).
Feed streams cycle through six peak levels (0 to -30 dBFS); calibration, evaluation and training
come from disjoint seeded streams ``[stream, seed, index]``.
"""

from __future__ import annotations

import functools

import numpy as np

from edgeq.zoo import synth_speech
from edgeq.zoo.synth_speech import _WORDS, _noise, _random_word, _segment

__all__ = ["SAMPLE_RATES", "CHUNK", "FRAMES", "STATE_SHAPE", "make_stream", "training_streams", "eval_streams",
           "calibration_data", "eval_data", "eval_labels"]

SAMPLE_RATES = (16000, 8000)
CHUNK = {16000: 512, 8000: 256}  # 32 ms either way
FRAMES = 94  # chunks per stream: 3 s
STATE_SHAPE = (2, 1, 64)  # (h and c, batch, hidden): vad.HIDDEN
PER_STREAM = 8  # feeds drawn from one stream at most
_LEVELS_DB = (0.0, -24.0, -12.0, -30.0, -6.0, -18.0)  # peak levels of feed streams, cycled
_TRAIN, _CALIB, _EVAL = 31, 32, 33
_SR = synth_speech.SR  # speech is made at 8 kHz


def _utterance(rng: np.random.Generator) -> np.ndarray:
    """One to three words of one speaker at 8 kHz, trimmed to the first and last sound."""
    speed, f0, scale = rng.uniform(0.8, 1.25), rng.uniform(85, 260), rng.uniform(0.85, 1.18)
    parts = []
    for _ in range(int(rng.integers(1, 4))):
        segs = _WORDS[rng.choice(list(_WORDS))] if rng.random() < 0.4 else _random_word(rng)
        parts.append(np.concatenate([_segment(s, speed, f0, scale, rng) for s in segs]) * rng.uniform(0.4, 1.0))
        parts.append(np.zeros(int(rng.uniform(0.03, 0.15) * _SR)))
    audio = np.concatenate(parts[:-1])
    sound = np.flatnonzero(np.abs(audio) > 1e-3)
    return audio[sound[0] : sound[-1] + 1]


def _upsample(audio: np.ndarray, factor: int) -> np.ndarray:
    """Band-limited upsampling (the spectrum zero-padded)."""
    return np.fft.irfft(np.fft.rfft(audio), len(audio) * factor) * factor


def make_stream(sr: int, frames: int, rng: np.random.Generator, level_db: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(audio (frames * CHUNK[sr],) float32 at ``sr``, chunk labels (frames,) int64: 1 for speech)."""
    n8 = frames * CHUNK[sr] * _SR // sr
    speech, active = np.zeros(n8), np.zeros(n8, bool)
    pos = int(rng.uniform(0.0, 1.0) * _SR)
    while rng.random() >= 0.1 and pos < n8:
        utterance = _utterance(rng)[: n8 - pos]
        speech[pos : pos + len(utterance)] = utterance
        active[pos : pos + len(utterance)] = True
        pos += len(utterance) + int(rng.uniform(0.25, 1.2) * _SR)
    if sr != _SR:
        speech, active = _upsample(speech, sr // _SR), np.repeat(active, sr // _SR)
    power = float(np.mean(speech[active] ** 2)) if active.any() else 0.01
    noise_rms = np.sqrt(power / 10 ** (rng.uniform(3, 25) / 10))
    audio = speech + noise_rms * _noise(len(speech), rng)
    level = rng.uniform(-30, 0) if level_db is None else level_db
    audio *= 10 ** (level / 20) / (np.abs(audio).max() + 1e-9)
    labels = active.reshape(frames, CHUNK[sr]).mean(1) >= 0.5
    return audio.astype(np.float32), labels.astype(np.int64)


def training_streams(n: int, sr: int, seed: int = 0, frames: int = FRAMES) -> tuple[np.ndarray, np.ndarray]:
    """(chunks (n, frames, CHUNK[sr]) float32, labels (n, frames) int64) from streams that
    calibration and evaluation never use."""
    x = np.zeros((n, frames, CHUNK[sr]), np.float32)
    y = np.zeros((n, frames), np.int64)
    for i in range(n):
        audio, y[i] = make_stream(sr, frames, np.random.default_rng([_TRAIN, seed, sr, i]))
        x[i] = audio.reshape(frames, CHUNK[sr])
    return x, y


def _feed_stream(stream: int, seed: int, sr: int, index: int) -> tuple[np.random.Generator, np.ndarray, np.ndarray]:
    """Stream ``index`` of the feeds (its level from the cycle), with its generator left for the draws."""
    rng = np.random.default_rng([stream, seed, sr, index])
    audio, labels = make_stream(sr, FRAMES, rng, _LEVELS_DB[index % len(_LEVELS_DB)] + rng.uniform(-3, 3))
    return rng, audio, labels


def eval_streams(n: int, seed: int = 1, sr: int = 16000) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` whole streams that ``eval_data(..., seed, sr)`` draws its chunks from:
    (chunks (n, FRAMES, CHUNK[sr]) float32, labels (n, FRAMES) int64)."""
    streams = [_feed_stream(_EVAL, seed, sr, i)[1:] for i in range(n)]
    return (np.stack([a.reshape(FRAMES, CHUNK[sr]) for a, _ in streams]), np.stack([y for _, y in streams]))


@functools.cache
def _session():
    import onnxruntime as ort

    from edgeq.zoo import vad_graph

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(vad_graph.build_model().SerializeToString(), options, providers=["CPUExecutionProvider"])


@functools.cache
def _feeds(n: int, seed: int, stream: int, sr: int) -> tuple[tuple[dict[str, np.ndarray], ...], tuple[int, ...]]:
    """``n`` feeds (state fed back through the fp32 model) and their chunk labels."""
    feeds, labels = [], []
    rate = np.array(sr, np.int64)
    for s in range(max(2, -(-n // PER_STREAM))):
        if len(feeds) >= n:
            break
        rng, audio, chunk_labels = _feed_stream(stream, seed, sr, s)
        chunks = audio.reshape(FRAMES, 1, CHUNK[sr])
        picks = set(rng.choice(FRAMES, min(PER_STREAM, n - len(feeds)), replace=False).tolist())
        state = np.zeros(STATE_SHAPE, np.float32)
        for t in range(max(picks) + 1):
            feed = {"input": chunks[t].copy(), "state": state, "sr": rate}
            if t in picks:
                feeds.append(feed)
                labels.append(int(chunk_labels[t]))
            state = _session().run(["stateN"], feed)[0]
    return tuple(feeds), tuple(labels)


def calibration_data(n: int = 32, seed: int = 0, sr: int = 16000) -> list[dict[str, np.ndarray]]:
    """``n`` chunks of synthetic streams with their fed-back states (speech and silence, loud and quiet)."""
    return [{k: v.copy() for k, v in f.items()} for f in _feeds(n, seed, _CALIB, sr)[0]]


def eval_data(n: int = 200, seed: int = 1, sr: int = 16000) -> list[dict[str, np.ndarray]]:
    """``n`` held-out chunks with their fed-back states (other streams than calibration's)."""
    return [{k: v.copy() for k, v in f.items()} for f in _feeds(n, seed, _EVAL, sr)[0]]


def eval_labels(n: int = 200, seed: int = 1, sr: int = 16000) -> np.ndarray:
    """The chunk labels of ``eval_data(n, seed, sr)`` in the same order: 1 speech, 0 not."""
    return np.array(_feeds(n, seed, _EVAL, sr)[1], np.int64)
