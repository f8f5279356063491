"""Synthetic document images for the ``textdet`` text detector, with their text masks.

numpy and scikit-image only (no torch, no fonts, nothing downloaded). Each image is 3x128x128:
a background (a crop of a scikit-image sample photo, a gradient or a flat paper colour, with
noise), one to three blocks of "text" -- lines of words made of glyph-like marks (bars, diagonals,
arcs, dots with ascenders and descenders, anti-aliased: drawn at 2x and averaged down) -- and
distractors that are not text (filled shapes, long rules). The target is the mask of the word
boxes, as a DBNet-style probability-map target. Images are ImageNet-normalized NCHW float32.

Every image is generated from its own seeded stream ``[stream, seed, index]``, so the same
``(n, seed)`` always gives the same images and a longer request extends a shorter one.
Calibration, evaluation and training use different streams.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["SIZE", "MEAN", "STD", "make_sample", "make_batch", "calibration_data", "eval_data", "eval_masks",
           "training_set"]

SIZE = 128
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
SOURCES = ("camera", "coffee", "chelsea", "astronaut", "brick", "grass", "gravel", "rocket", "coins", "moon", "text")
_TRAIN, _CALIB, _EVAL = 11, 12, 13
_UP = 2  # the text layer is drawn at 2x and averaged down (anti-aliasing)


@functools.cache
def _sources() -> tuple[np.ndarray, ...]:
    import skimage.data
    from skimage.transform import rescale

    out = []
    for name in SOURCES:
        image = getattr(skimage.data, name)()
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        image = image[..., :3].astype(np.float32) / 255.0
        scale = 192 / min(image.shape[:2])
        if scale < 1:
            image = rescale(image, scale, channel_axis=2, anti_aliasing=True).astype(np.float32)
        image.setflags(write=False)
        out.append(image)
    return tuple(out)


def _background(rng: np.random.Generator) -> np.ndarray:
    from skimage.transform import resize

    kind = rng.random()
    if kind < 0.4:  # photo crop
        image = _sources()[rng.integers(len(SOURCES))]
        h, w = image.shape[:2]
        side = int(min(h, w) * rng.uniform(0.4, 1.0))
        top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        bg = resize(image[top : top + side, left : left + side], (SIZE, SIZE), anti_aliasing=side > SIZE)
        if rng.random() < 0.5:  # washed out, like a photo behind a caption
            bg = 0.5 * bg + 0.5 * rng.uniform(0.3, 1.0)
    elif kind < 0.7:  # gradient between two colours
        a, b = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
        angle = rng.uniform(0, np.pi)
        yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
        t = (np.cos(angle) * xx + np.sin(angle) * yy)
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
        bg = a * (1 - t[..., None]) + b * t[..., None]
    else:  # paper: flat, light or dark
        base = rng.uniform(0.75, 1.0) if rng.random() < 0.75 else rng.uniform(0.0, 0.3)
        bg = np.full((SIZE, SIZE, 3), base) + rng.normal(0, 0.03, 3)
    return np.clip(bg + rng.normal(0, rng.uniform(0, 0.04), (SIZE, SIZE, 3)), 0, 1).astype(np.float32)


def _stroke(layer: np.ndarray, p0: tuple[float, float], p1: tuple[float, float], width: float) -> None:
    """A straight stroke of ``width`` pixels from p0 to p1 (row, col) on ``layer``."""
    from skimage.draw import polygon

    (r0, c0), (r1, c1) = p0, p1
    dr, dc = r1 - r0, c1 - c0
    norm = max(np.hypot(dr, dc), 1e-6)
    nr, nc = -dc / norm * width / 2, dr / norm * width / 2
    rows = [r0 + nr, r1 + nr, r1 - nr, r0 - nr]
    cols = [c0 + nc, c1 + nc, c1 - nc, c0 - nc]
    rr, cc = polygon(rows, cols, layer.shape)
    layer[rr, cc] = 1.0


def _glyph(layer: np.ndarray, top: float, left: float, h: float, w: float, width: float,
           rng: np.random.Generator) -> float:
    """One glyph-like mark in the box (top, left, h, w); returns its right edge."""
    x_height = top + 0.35 * h  # ascender zone above, baseline at top + h
    parts = rng.integers(1, 4)
    for _ in range(parts):
        kind = rng.integers(7)
        if kind == 0:  # vertical bar, maybe with ascender / descender
            c = left + rng.uniform(0.1, 0.9) * w
            r0 = top if rng.random() < 0.3 else x_height
            r1 = top + h + (0.25 * h if rng.random() < 0.15 else 0)
            _stroke(layer, (r0, c), (r1, c), width)
        elif kind == 1:  # horizontal bar
            r = rng.choice([x_height, top + 0.65 * h, top + h])
            _stroke(layer, (r, left), (r, left + w), width)
        elif kind == 2:  # diagonal
            if rng.random() < 0.5:
                _stroke(layer, (x_height, left), (top + h, left + w), width)
            else:
                _stroke(layer, (top + h, left), (x_height, left + w), width)
        elif kind in (3, 4):  # arc: a bowl opening left or right, or a full o
            span = np.pi if kind == 3 else 2 * np.pi
            start = rng.choice([-np.pi / 2, np.pi / 2]) if kind == 3 else 0.0
            angles = np.linspace(start, start + span, 9)
            cr, cc = (x_height + top + h) / 2, left + w / 2
            rr, rc = (top + h - x_height) / 2, w / 2
            pts = [(cr - rr * np.sin(a), cc + rc * np.cos(a)) for a in angles]
            for a, b in zip(pts[:-1], pts[1:]):
                _stroke(layer, a, b, width)
        elif kind == 5:  # dot (i, j, punctuation)
            from skimage.draw import disk

            rr, cc = disk((top + rng.uniform(0.1, 1.0) * h, left + w / 2), max(width * 0.8, 1.0), shape=layer.shape)
            layer[rr, cc] = 1.0
        else:  # short hook at the x-height
            _stroke(layer, (x_height, left), (x_height + 0.3 * h, left + 0.5 * w), width)
    return left + w


def _text_block(layer: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> None:
    """Lines of words at 2x on ``layer``; their boxes (1x) on ``mask``."""
    big = SIZE * _UP
    h = rng.uniform(5, 13) * _UP
    width = max(1.0, h * rng.uniform(0.09, 0.17))
    line_gap = h * rng.uniform(1.4, 2.0)
    lines = int(rng.integers(1, 6))
    left0 = rng.uniform(-0.1, 0.6) * big
    right = min(big, left0 + rng.uniform(0.3, 1.0) * big)
    top = rng.uniform(-0.05, 0.85) * big
    for _ in range(lines):
        if top + h > big:
            break
        x = left0 + rng.uniform(0, 2) * h
        while True:
            n = int(rng.integers(2, 9))
            glyph_w = h * rng.uniform(0.45, 0.75)
            word_w = n * glyph_w * 1.2
            if x + word_w > right or x > big:
                break
            start = x
            for _ in range(n):
                x = _glyph(layer, top, x, h, glyph_w * rng.uniform(0.8, 1.2), width, rng) + 0.2 * glyph_w
            r0, r1 = int(np.floor(top / _UP)), int(np.ceil((top + h) / _UP))
            c0, c1 = int(np.floor(start / _UP)), int(np.ceil((x - 0.2 * glyph_w) / _UP))
            mask[max(r0, 0) : max(r1, 0), max(c0, 0) : max(c1, 0)] = 1.0
            x += h * rng.uniform(0.5, 1.0)
        top += line_gap


def _distractors(layer: np.ndarray, rng: np.random.Generator) -> None:
    from skimage.draw import disk, polygon

    big = SIZE * _UP
    for _ in range(rng.integers(0, 4)):
        kind = rng.integers(3)
        if kind == 0:  # long rule (table line, underline)
            r, c = rng.uniform(0, big, 2)
            length = rng.uniform(0.4, 1.0) * big
            if rng.random() < 0.5:
                _stroke(layer, (r, c - length / 2), (r, c + length / 2), rng.uniform(1.5, 4))
            else:
                _stroke(layer, (r - length / 2, c), (r + length / 2, c), rng.uniform(1.5, 4))
        elif kind == 1:  # filled disk
            rr, cc = disk(tuple(rng.uniform(0, big, 2)), rng.uniform(8, 40), shape=layer.shape)
            layer[rr, cc] = 1.0
        else:  # filled triangle / quad
            k = int(rng.integers(3, 5))
            centre, radius = rng.uniform(0, big, 2), rng.uniform(12, 50)
            angles = np.sort(rng.uniform(0, 2 * np.pi, k))
            rr, cc = polygon(centre[0] + radius * np.sin(angles), centre[1] + radius * np.cos(angles), layer.shape)
            layer[rr, cc] = 1.0


def _composite(image: np.ndarray, alpha: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Paint ``alpha`` (2x) onto ``image`` in a colour that contrasts with what is under it."""
    a = alpha.reshape(SIZE, _UP, SIZE, _UP).mean(axis=(1, 3))[..., None]
    if not a.any():
        return image
    under = float((image.mean(axis=2, keepdims=True) * a).sum() / a.sum())
    contrast = rng.uniform(0.3, 0.8)
    level = under - contrast if under > 0.5 else under + contrast
    colour = np.clip(level + rng.normal(0, 0.08, 3), 0, 1)
    return image * (1 - a) + colour * a


def make_sample(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(image (3, 128, 128) float32 normalized, text mask (1, 128, 128) float32 in {0, 1})."""
    from skimage.filters import gaussian

    image = _background(rng)
    mask = np.zeros((SIZE, SIZE), dtype=np.float32)
    big = SIZE * _UP
    shapes = np.zeros((big, big), dtype=np.float32)
    _distractors(shapes, rng)
    image = _composite(image, shapes, rng)
    blocks = 0 if rng.random() < 0.08 else int(rng.integers(1, 4))
    for _ in range(blocks):
        layer = np.zeros((big, big), dtype=np.float32)
        _text_block(layer, mask, rng)
        image = _composite(image, layer, rng)
    if rng.random() < 0.3:
        image = gaussian(image, sigma=rng.uniform(0.3, 0.9), channel_axis=2)
    image = np.clip(image + rng.normal(0, rng.uniform(0, 0.03), image.shape), 0, 1)
    x = ((image - MEAN) / STD).transpose(2, 0, 1).astype(np.float32)
    return x, mask[None]


def make_batch(n: int, seed: int, stream: int) -> tuple[np.ndarray, np.ndarray]:
    """(images (n, 3, 128, 128), masks (n, 1, 128, 128)) from streams ``[stream, seed, i]``."""
    xs, ms = zip(*(make_sample(np.random.default_rng([stream, seed, i])) for i in range(n))) if n else ((), ())
    return (np.stack(xs) if n else np.zeros((0, 3, SIZE, SIZE), np.float32),
            np.stack(ms) if n else np.zeros((0, 1, SIZE, SIZE), np.float32))


def training_set(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The training images and masks (a stream that calibration and evaluation never use)."""
    return make_batch(n, seed, _TRAIN)


def calibration_data(n: int = 32, seed: int = 0, input_name: str = "input") -> list[dict[str, np.ndarray]]:
    """``n`` synthetic document images, batch 1 each (not the evaluation images)."""
    x, _ = make_batch(n, seed, _CALIB)
    return [{input_name: x[i : i + 1]} for i in range(n)]


def eval_data(n: int = 200, seed: int = 1, input_name: str = "input") -> list[dict[str, np.ndarray]]:
    """``n`` held-out synthetic document images, batch 1 each."""
    x, _ = make_batch(n, seed, _EVAL)
    return [{input_name: x[i : i + 1]} for i in range(n)]


def eval_masks(n: int = 200, seed: int = 1) -> np.ndarray:
    """The true text masks (n, 1, 128, 128) of ``eval_data(n, seed)``, in the same order."""
    return make_batch(n, seed, _EVAL)[1]
