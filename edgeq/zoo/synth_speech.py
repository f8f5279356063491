"""Synthetic spoken keywords for the ``kws`` model, as log-mel features computed in numpy.

numpy only (no torch, no torchaudio, nothing downloaded). Twelve classes like the Speech
Commands task: ten keywords, ``_silence_`` and ``_unknown_``. A keyword is a fixed sequence of
speech-like segments -- voiced vowels with formant glides (harmonics of a pitch contour shaped by
formant resonances), nasals, fricatives (band-limited noise) and plosive bursts after a closure.
Each utterance varies the speaker (pitch 85-260 Hz, vocal-tract length: formants scaled
0.85-1.18), the speed (0.8-1.25x, per segment +-12%), the loudness and the position in the 1 s
clip, and adds white, pink or brown noise at 3-25 dB SNR. ``_unknown_`` utterances are random
segment sequences; ``_silence_`` is noise alone.

Audio: 8 kHz, 1 s. Features: 256-point Hann STFT, hop 125, 40 mel bands (HTK mel, 20-4000 Hz),
log power, normalized by fixed constants -> float32 (1, 1, 40, 64) per utterance.
Every utterance comes from its own seeded stream ``[stream, seed, index]``; the class of index
``i`` is ``i % 12`` shuffled per block of 12, so any prefix is balanced.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["CLASSES", "SR", "N_MELS", "N_FRAMES", "mel_filterbank", "log_mel", "synthesize", "make_batch",
           "training_set", "calibration_data", "eval_data", "eval_labels"]

CLASSES = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "_silence_", "_unknown_")
SR = 8000
N_FFT = 256
HOP = 125
N_MELS = 40
N_FRAMES = 64
FEATURE_MEAN = -11.4  # fixed normalization of the log-mel power (measured once on training data, rounded)
FEATURE_STD = 2.0
_TRAIN, _CALIB, _EVAL = 21, 22, 23

# vowels: (F1, F2) in Hz
_V = {"i": (280, 2250), "e": (450, 1950), "ae": (660, 1720), "a": (730, 1100), "o": (480, 820),
      "u": (320, 870), "er": (490, 1350), "ai": (700, 1400)}
# segments: ("v", start vowel, end vowel, seconds) | ("n", seconds) | ("f", centre Hz, bandwidth Hz, seconds)
# | ("b", centre Hz) (a closure then a burst)
_WORDS = {
    "yes": [("v", "i", "e", 0.10), ("v", "e", "e", 0.10), ("f", 3300, 900, 0.12)],
    "no": [("n", 0.07), ("v", "o", "u", 0.22)],
    "up": [("v", "a", "er", 0.14), ("b", 1200)],
    "down": [("b", 3000), ("v", "a", "u", 0.2), ("n", 0.08)],
    "left": [("v", "er", "e", 0.06), ("v", "e", "e", 0.12), ("f", 1800, 1400, 0.08), ("b", 3200)],
    "right": [("v", "er", "er", 0.07), ("v", "a", "i", 0.2), ("b", 3200)],
    "on": [("v", "a", "o", 0.16), ("n", 0.1)],
    "off": [("v", "o", "a", 0.16), ("f", 2000, 1800, 0.12)],
    "stop": [("f", 3400, 800, 0.1), ("b", 3000), ("v", "a", "a", 0.14), ("b", 1000)],
    "go": [("b", 1600), ("v", "ae", "o", 0.1), ("v", "o", "u", 0.12)],
}


@functools.cache
def mel_filterbank(n_mels: int = N_MELS, n_fft: int = N_FFT, sr: int = SR, fmin: float = 20.0,
                   fmax: float | None = None) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters equally spaced on the HTK mel scale."""
    fmax = sr / 2 if fmax is None else fmax

    def mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def hz(m):
        return 700.0 * (10 ** (np.asarray(m) / 2595.0) - 1.0)

    edges = hz(np.linspace(mel(fmin), mel(fmax), n_mels + 2))
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    lower = (freqs[None, :] - edges[:-2, None]) / (edges[1:-1, None] - edges[:-2, None])
    upper = (edges[2:, None] - freqs[None, :]) / (edges[2:, None] - edges[1:-1, None])
    bank = np.maximum(0.0, np.minimum(lower, upper))
    bank *= (2.0 / (edges[2:] - edges[:-2]))[:, None]  # equal area (slaney normalization)
    return bank.astype(np.float32)


def log_mel(audio: np.ndarray) -> np.ndarray:
    """1 s of 8 kHz audio -> normalized log-mel features (N_MELS, N_FRAMES) float32."""
    padded = np.pad(audio, N_FFT // 2, mode="reflect")
    idx = np.arange(N_FRAMES)[:, None] * HOP + np.arange(N_FFT)[None, :]
    frames = padded[idx] * np.hanning(N_FFT)[None, :]
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2 / N_FFT
    mel = power @ mel_filterbank().T  # (frames, mels)
    return ((np.log(mel.T + 1e-6) - FEATURE_MEAN) / FEATURE_STD).astype(np.float32)


def _band_noise(n: int, centre: float, width: float, rng: np.random.Generator) -> np.ndarray:
    spec = np.fft.rfft(rng.normal(size=n))
    freqs = np.fft.rfftfreq(n, 1 / SR)
    spec *= np.exp(-0.5 * ((freqs - centre) / (width / 2)) ** 2)
    out = np.fft.irfft(spec, n)
    return out / (np.abs(out).max() + 1e-9)


def _voiced(n: int, f1: tuple[float, float], f2: tuple[float, float], f0: tuple[float, float],
            scale: float, amp: float = 1.0) -> np.ndarray:
    """Harmonics of a gliding pitch shaped by two gliding formants and a fixed third one."""
    t = np.linspace(0, 1, n)
    pitch = f0[0] + (f0[1] - f0[0]) * t
    phase = 2 * np.pi * np.cumsum(pitch) / SR
    formants = [(f1[0] + (f1[1] - f1[0]) * t) * scale, (f2[0] + (f2[1] - f2[0]) * t) * scale,
                np.full(n, 2600.0 * scale)]
    gains, widths = (1.0, 0.7, 0.25), (90.0, 120.0, 180.0)
    k = np.arange(1, int(3900 // max(f0)) + 1)[:, None]
    freq = k * pitch[None, :]
    env = sum(g * np.exp(-0.5 * ((freq - f[None, :]) / w) ** 2) for g, f, w in zip(gains, formants, widths))
    env = env + 0.02 / k  # glottal roll-off floor
    signal = (env * np.sin(k * phase[None, :])).sum(0)
    return amp * signal / (np.abs(signal).max() + 1e-9)


def _segment(seg: tuple, speed: float, f0: float, scale: float, rng: np.random.Generator) -> np.ndarray:
    kind = seg[0]
    jitter = speed * rng.uniform(0.88, 1.12)
    if kind == "v":
        n = int(seg[3] * SR * jitter)
        a, b = _V[seg[1]], _V[seg[2]]
        contour = (f0 * rng.uniform(0.95, 1.1), f0 * rng.uniform(0.8, 1.0))
        out = _voiced(n, (a[0], b[0]), (a[1], b[1]), contour, scale)
    elif kind == "n":
        n = int(seg[1] * SR * jitter)
        out = _voiced(n, (250, 250), (1000, 1100), (f0, f0), scale, amp=0.35)
    elif kind == "f":
        n = int(seg[3] * SR * jitter)
        out = 0.45 * _band_noise(n, seg[1] * scale, seg[2], rng)
    else:  # closure (silence) then burst
        closure = np.zeros(int(0.04 * SR * jitter))
        burst = 0.8 * _band_noise(int(0.025 * SR), seg[1] * scale, 2500, rng) * np.exp(-np.linspace(0, 5, int(0.025 * SR)))
        return np.concatenate([closure, burst])
    ramp = min(len(out) // 4, int(0.015 * SR))
    if ramp:
        out[:ramp] *= np.linspace(0, 1, ramp)
        out[-ramp:] *= np.linspace(1, 0, ramp)
    return out


def _random_word(rng: np.random.Generator) -> list[tuple]:
    vowels = list(_V)
    segs: list[tuple] = []
    for _ in range(int(rng.integers(2, 5))):
        kind = rng.choice(["v", "v", "n", "f", "b"])
        if kind == "v":
            segs.append(("v", vowels[rng.integers(len(vowels))], vowels[rng.integers(len(vowels))], rng.uniform(0.08, 0.2)))
        elif kind == "n":
            segs.append(("n", rng.uniform(0.05, 0.1)))
        elif kind == "f":
            segs.append(("f", rng.uniform(1500, 3600), rng.uniform(600, 1800), rng.uniform(0.06, 0.14)))
        else:
            segs.append(("b", rng.uniform(1000, 3300)))
    return segs


def _noise(n: int, rng: np.random.Generator) -> np.ndarray:
    white = rng.normal(size=n)
    colour = rng.integers(3)
    if colour == 0:
        return white
    spec = np.fft.rfft(white)
    freqs = np.maximum(np.fft.rfftfreq(n, 1 / SR), 20.0)
    spec /= freqs ** (0.5 if colour == 1 else 1.0)  # pink or brown
    out = np.fft.irfft(spec, n)
    return out / out.std()


def synthesize(label: int, rng: np.random.Generator) -> np.ndarray:
    """1 s of 8 kHz audio (float64) of class ``CLASSES[label]``."""
    n = SR
    audio = np.zeros(n)
    name = CLASSES[label]
    if name != "_silence_":
        segs = _random_word(rng) if name == "_unknown_" else _WORDS[name]
        speed, f0, scale = rng.uniform(0.8, 1.25), rng.uniform(85, 260), rng.uniform(0.85, 1.18)
        word = np.concatenate([_segment(s, speed, f0, scale, rng) for s in segs])[: int(0.95 * n)]
        start = int(rng.integers(0, n - len(word) + 1))
        audio[start : start + len(word)] = word * rng.uniform(0.3, 1.0)
        power = float(np.mean(word**2)) * len(word) / n
        snr_db = rng.uniform(3, 25)
        noise_rms = np.sqrt(power / 10 ** (snr_db / 10))
    else:
        noise_rms = rng.uniform(0.003, 0.1)
    return audio + noise_rms * _noise(n, rng)


def _labels(n: int, seed: int, stream: int) -> np.ndarray:
    blocks = -(-n // len(CLASSES))
    return np.concatenate([np.random.default_rng([stream + 100, seed, b]).permutation(len(CLASSES))
                           for b in range(blocks)])[:n].astype(np.int64) if n else np.zeros(0, np.int64)


def make_batch(n: int, seed: int, stream: int) -> tuple[np.ndarray, np.ndarray]:
    """(features (n, 1, 40, 64) float32, labels (n,) int64) from streams ``[stream, seed, i]``."""
    labels = _labels(n, seed, stream)
    x = np.zeros((n, 1, N_MELS, N_FRAMES), dtype=np.float32)
    for i, label in enumerate(labels):
        x[i, 0] = log_mel(synthesize(int(label), np.random.default_rng([stream, seed, i])))
    return x, labels


def training_set(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Training features and labels (a stream that calibration and evaluation never use)."""
    return make_batch(n, seed, _TRAIN)


def calibration_data(n: int = 32, seed: int = 0, input_name: str = "input") -> list[dict[str, np.ndarray]]:
    """``n`` synthetic utterances (balanced over the 12 classes), batch 1 each."""
    x, _ = make_batch(n, seed, _CALIB)
    return [{input_name: x[i : i + 1]} for i in range(n)]


def eval_data(n: int = 200, seed: int = 1, input_name: str = "input") -> list[dict[str, np.ndarray]]:
    """``n`` held-out synthetic utterances, batch 1 each."""
    x, _ = make_batch(n, seed, _EVAL)
    return [{input_name: x[i : i + 1]} for i in range(n)]


def eval_labels(n: int = 200, seed: int = 1) -> np.ndarray:
    """The classes of ``eval_data(n, seed)``, in the same order (indices into CLASSES)."""
    return _labels(n, seed, _EVAL)
