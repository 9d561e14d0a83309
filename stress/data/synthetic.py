"""A learnable stand-in dataset, for smoke runs and tests: one shape in one colour per class."""

from __future__ import annotations

import numpy as np

from stress.constants import CIFAR10_CLASSES

SHAPES = ("disc", "square", "triangle", "hbar", "vbar", "plus", "ring", "diagonal", "diamond", "checker")
COLOURS = ("red", "green", "blue", "yellow", "magenta", "cyan", "orange", "brown", "white", "grey")
PALETTE = np.array(
    [[230, 60, 50], [50, 200, 60], [60, 90, 230], [230, 210, 40], [200, 60, 210],
     [40, 210, 210], [240, 140, 30], [140, 70, 30], [245, 245, 245], [120, 120, 120]],
    dtype=np.float32,
)
MAX_CLASSES = len(SHAPES) * len(COLOURS)


def synthetic_class(label: int) -> tuple[int, int]:
    """(shape, colour) of a class: label % 10 picks the shape, and the colour is shifted by label // 10,
    so the first 10 classes are the 10 shapes in 10 colours and all 100 pairs are distinct."""
    shape = label % len(SHAPES)
    return shape, (label // len(SHAPES) + shape) % len(COLOURS)


def synthetic_class_names(num_classes: int) -> tuple[str, ...]:
    """Ten classes keep CIFAR-10's names (the stand-in for the seed's dataset); more are named by shape and colour."""
    if num_classes == len(CIFAR10_CLASSES):
        return CIFAR10_CLASSES
    return tuple(f"{COLOURS[c]} {SHAPES[s]}" for s, c in map(synthetic_class, range(num_classes)))


def make_synthetic(n_train: int, n_test: int, seed: int = 0, num_classes: int = 10, size: int = 32) -> dict[str, np.ndarray]:
    """Images (N, size, size, 3) uint8: each class one shape in one colour, jittered, on a noisy background."""
    if not 2 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes must be in [2, {MAX_CLASSES}], got {num_classes}")
    rng = np.random.default_rng(seed)
    scale = size / 32  # positions and sizes are drawn for a 32x32 canvas and scaled
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)

    def shape_mask(shape: int, cy: np.ndarray, cx: np.ndarray, extent: np.ndarray) -> np.ndarray:
        dy, dx = rows[None] - cy[:, None, None], cols[None] - cx[:, None, None]  # (n, size, size)
        s = extent[:, None, None]
        radius = np.sqrt(dy**2 + dx**2)
        step = 3 * scale
        masks = [
            lambda: radius <= s,  # disc
            lambda: (np.abs(dy) <= s) & (np.abs(dx) <= s),  # square
            lambda: (dy >= -s) & (dy <= s) & (np.abs(dx) <= (dy + s) / 2),  # triangle
            lambda: (np.abs(dy) <= s / 3) & (np.abs(dx) <= s * 1.4),  # horizontal bar
            lambda: (np.abs(dx) <= s / 3) & (np.abs(dy) <= s * 1.4),  # vertical bar
            lambda: ((np.abs(dx) <= s / 3) | (np.abs(dy) <= s / 3)) & (np.abs(dx) <= s) & (np.abs(dy) <= s),  # plus
            lambda: (radius <= s) & (radius >= s * 0.55),  # ring
            lambda: (np.abs(dx - dy) <= s / 3) & (np.abs(dx) <= s),  # diagonal
            lambda: (np.abs(dx) + np.abs(dy) <= s * 1.2),  # diamond
            lambda: ((np.floor((dx + 16 * scale) / step) + np.floor((dy + 16 * scale) / step)) % 2 == 0)
            & (np.abs(dx) <= s) & (np.abs(dy) <= s),  # checker
        ]
        return masks[shape]()

    def generate(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.arange(n) % num_classes
        rng.shuffle(labels)
        background = rng.uniform(20, 110, size=(n, 1, 1, 3)).astype(np.float32)
        images = background + rng.normal(0, 18, size=(n, size, size, 3)).astype(np.float32)
        for label in range(num_classes):
            shape, colour = synthetic_class(label)
            idx = np.flatnonzero(labels == label)
            cy, cx = rng.uniform(11 * scale, 21 * scale, size=(2, len(idx)))
            extent = rng.uniform(5 * scale, 8 * scale, size=len(idx))
            mask = shape_mask(shape, cy, cx, extent)  # (n_label, size, size)
            tint = PALETTE[colour] * rng.uniform(0.75, 1.1, size=(len(idx), 1))  # (n_label, 3)
            images[idx] = np.where(mask[..., None], tint[:, None, None, :], images[idx])
        images += rng.normal(0, 10, size=images.shape)
        return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)

    x_train, y_train = generate(n_train)
    x_test, y_test = generate(n_test)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
