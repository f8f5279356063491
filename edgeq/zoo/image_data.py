"""Natural-looking 3x224x224 inputs for the 224 models: crops of scikit-image's sample photos.

numpy and scikit-image only (no torch). Each feed is a random crop (scale 35-100% of the short
side), resized to 224x224, randomly flipped and brightness-jittered, ImageNet-normalized, NCHW.
Calibration and evaluation draw from independent random streams, so the same seed gives
different crops.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["SIZE", "SOURCES", "MEAN", "STD", "sample_images", "calibration_data", "eval_data"]

SIZE = 224
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
SOURCES = (
    "astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
    "retina", "colorwheel", "camera", "coins", "moon", "brick", "grass", "gravel",
)
_WORK_SIDE = 320  # sources are shrunk once so that crops are cheap


@functools.cache
def _sources() -> tuple[np.ndarray, ...]:
    import skimage.data
    from skimage.transform import rescale

    images = []
    for name in SOURCES:
        image = getattr(skimage.data, name)()
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        image = image[..., :3].astype(np.float32) / 255.0
        scale = _WORK_SIDE / min(image.shape[:2])
        if scale < 1:
            image = rescale(image, scale, channel_axis=2, anti_aliasing=True).astype(np.float32)
        image.setflags(write=False)
        images.append(image)
    return tuple(images)


def sample_images(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` images as (n, 3, 224, 224) float32, normalized."""
    from skimage.transform import resize

    sources = _sources()
    out = np.empty((n, 3, SIZE, SIZE), dtype=np.float32)
    for i in range(n):
        image = sources[rng.integers(len(sources))]
        h, w = image.shape[:2]
        side = int(min(h, w) * rng.uniform(0.35, 1.0))
        top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crop = resize(image[top : top + side, left : left + side], (SIZE, SIZE), anti_aliasing=side > SIZE)
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        crop = np.clip(crop * rng.uniform(0.8, 1.2), 0.0, 1.0)
        out[i] = ((crop - MEAN) / STD).transpose(2, 0, 1)
    return out


def _feeds(n: int, seed: int, stream: int, input_name: str) -> list[dict[str, np.ndarray]]:
    images = sample_images(n, np.random.default_rng([seed, stream]))
    return [{input_name: images[i : i + 1]} for i in range(n)]


def calibration_data(n: int = 32, seed: int = 0, input_name: str = "input") -> list[dict[str, np.ndarray]]:
    return _feeds(n, seed, 0, input_name)


def eval_data(n: int = 200, seed: int = 1, input_name: str = "input") -> list[dict[str, np.ndarray]]:
    return _feeds(n, seed, 1, input_name)
