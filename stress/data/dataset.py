"""The dataset after checks, the train/validation split, the fingerprint and the input statistics.

Arrays are held as numpy uint8 (N, 3, S, S) images and int64 (N,) labels in [0, classes).
What depends on the dataset (class names, number of classes, image size, per-channel mean and
standard deviation) is read from it here and recorded in the run's config by
stress.resolve. Every problem with user-supplied data raises StressError with a one-line
message that names the file and what is wrong.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stress.config import DataConfig
from stress.constants import CIFAR10_CLASSES
from stress.data.download import default_cache_dir, download_named
from stress.data.files import is_image_folder, load_batches_folder, load_image_folder, load_npz
from stress.data.synthetic import make_synthetic, synthetic_class_names
from stress.errors import StressError
from stress.paths import check_regular_file, expand

MIN_SIZE = 8  # pixels per side


@dataclass(frozen=True)
class Dataset:
    """The whole dataset after checks. Images uint8 (N, 3, S, S), labels int64 (N,)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    sha256: str  # fingerprint of the four arrays as loaded, before any limit or resize
    class_names: tuple[str, ...] = CIFAR10_CLASSES

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[-1])


@dataclass(frozen=True)
class Splits:
    """Train/validation/test arrays as used by a run, plus the validation indices into the training set."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    val_indices: np.ndarray
    source: str
    sha256: str
    class_names: tuple[str, ...] = CIFAR10_CLASSES

    def arrays(self) -> dict[str, np.ndarray]:
        """The six arrays by name, as shipped to workers."""
        return {k: getattr(self, k) for k in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")}

    def describe(self) -> dict:
        return {
            "source": self.source,
            "train": int(len(self.train_y)),
            "val": int(len(self.val_y)),
            "test": int(len(self.test_y)),
            "sha256": self.sha256,
            "classes": len(self.class_names),
            "image_size": int(self.train_x.shape[-1]),
        }

    def summary_line(self) -> str:
        """One readable line for the log: source, split sizes, classes, image size, fingerprint."""
        d = self.describe()
        size = d["image_size"]
        return (f"{d['source']}: {d['train']:,} train / {d['val']:,} val / {d['test']:,} test images, "
                f"{d['classes']} classes, {size}x{size}, sha256 {d['sha256'][:12]}")


def fingerprint(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of the arrays, in key order."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def check_arrays(x: np.ndarray, y: np.ndarray, split: str, where: str, num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validate one split (images NHWC uint8, square, RGB; labels integer in [0, num_classes)); return (NCHW uint8, int64)."""
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8:
        raise StressError(f"{where}: x_{split} must be uint8, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.ndim != 4 or x.shape[3] != 3 or x.shape[1] != x.shape[2] or x.shape[1] < MIN_SIZE:
        raise StressError(f"{where}: x_{split} must have shape (N, S, S, 3) with S >= {MIN_SIZE} (square RGB images), "
                          f"got {tuple(x.shape)}")
    if not isinstance(y, np.ndarray) or y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise StressError(
            f"{where}: y_{split} must be a 1-D integer array, got {getattr(y, 'dtype', '?')} {tuple(getattr(y, 'shape', ()))}"
        )
    if len(x) != len(y):
        raise StressError(f"{where}: x_{split} has {len(x)} images but y_{split} has {len(y)} labels")
    if len(y) == 0:
        raise StressError(f"{where}: the {split} split is empty")
    low, high = int(y.min()), int(y.max())
    if num_classes is not None and (low < 0 or high >= num_classes):
        raise StressError(f"{where}: y_{split} labels must be in [0, {num_classes - 1}], found range [{low}, {high}]")
    if low < 0:
        raise StressError(f"{where}: y_{split} labels must be >= 0, found {low}")
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)), y.astype(np.int64)


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, 3, S, S) -> (N, 3, size, size): bilinear with antialiasing (PIL's resize), rounded back to uint8."""
    import torch
    import torch.nn.functional as F

    if images.shape[-1] == size:
        return images
    out = []
    for i in range(0, len(images), 2048):
        chunk = torch.from_numpy(images[i : i + 2048]).float()
        resized = F.interpolate(chunk, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(resized.round().clamp(0, 255).to(torch.uint8).numpy())
    return np.concatenate(out)


def _read_source(config: DataConfig) -> tuple[dict, str]:
    """(raw arrays, where) for config.source: synthetic, torchvision[:NAME], a .npz, a batches folder or an image folder."""
    source = config.source
    if source == "synthetic":
        raw = make_synthetic(config.synthetic_train, config.synthetic_test, num_classes=config.synthetic_classes,
                             size=config.synthetic_size)
        return {**raw, "class_names": synthetic_class_names(config.synthetic_classes)}, "synthetic"
    if is_named_source(source):
        root = default_cache_dir()
        name = source.partition(":")[2] or "cifar10"
        return download_named(name, root), str(root if name == "cifar10" else root / name)
    path = check_source_path(source)
    if path.is_dir():
        return (load_image_folder(path) if is_image_folder(path) else load_batches_folder(path)), str(path)
    return load_npz(path), str(path)


def check_source_path(source: str) -> Path:
    """The path --data names, refused in one line when it is missing, special or of an unsupported kind.

    It reads nothing, so the commands call it before importing torch and Ray: a mistyped path fails at once.
    """
    path = expand(source, "--data")
    if not path.exists():
        raise StressError(f"{path}: no such file or folder (use --data torchvision[:cifar10|cifar100|svhn] | synthetic | PATH)")
    check_regular_file(path, "--data")
    if not path.is_dir() and path.suffix != ".npz":
        raise StressError(f"{path}: unsupported data file; expected a .npz file, an image folder (train/, test/) "
                          "or a cifar-10-batches-py folder")
    return path


def is_named_source(source: str) -> bool:
    """Whether --data names a generated or downloaded dataset rather than a path."""
    return source == "synthetic" or source == "torchvision" or source.startswith("torchvision:")


def load_dataset(config: DataConfig) -> Dataset:
    """Load and check the source named by `config.source`, resized to config.image_size when that is set."""
    raw, where = _read_source(config)
    names = raw.get("class_names")
    if names is not None and len(set(names)) != len(names):
        raise StressError(f"{where}: class_names lists a name more than once")
    x_train, y_train = check_arrays(raw["x_train"], raw["y_train"], "train", where, len(names) if names else None)
    x_test, y_test = check_arrays(raw["x_test"], raw["y_test"], "test", where, len(names) if names else None)
    if x_train.shape[-1] != x_test.shape[-1]:
        raise StressError(f"{where}: train images are {x_train.shape[-1]} pixels wide but test images {x_test.shape[-1]}")
    num_classes = len(names) if names else int(max(y_train.max(), y_test.max())) + 1
    if num_classes < 2:
        raise StressError(f"{where}: labels hold a single class; a classifier needs at least 2")
    if config.class_names:
        if len(config.class_names) != num_classes:
            raise StressError(f"data.class_names lists {len(config.class_names)} names, but {where} has {num_classes} classes")
        names = tuple(config.class_names)
    if not names:
        # Files without names: 10 classes of 32x32 images are taken as CIFAR-10 in its official label order
        # (the batches folder, the local .npz copy); anything else is numbered. data.class_names overrides both.
        cifar_shaped = num_classes == len(CIFAR10_CLASSES) and x_train.shape[-1] == 32
        names = CIFAR10_CLASSES if cifar_shaped else tuple(str(c) for c in range(num_classes))
    empty = np.flatnonzero(np.bincount(y_train, minlength=num_classes) == 0)
    if len(empty):
        shown = ", ".join(f"{int(c)} ({names[c]})" for c in empty[:5])
        raise StressError(f"{where}: class(es) {shown}{' …' if len(empty) > 5 else ''} have no training images")
    sha = fingerprint({k: raw[k] for k in ("x_train", "y_train", "x_test", "y_test")})
    if config.image_size:
        x_train, x_test = resize_images(x_train, config.image_size), resize_images(x_test, config.image_size)
    return Dataset(x_train, y_train, x_test, y_test, source=where, sha256=sha, class_names=tuple(names))


def default_val_size(n_train: int) -> int:
    """Validation images when data.val_size is 0: a tenth of the training images in use, rounded (CIFAR-10: 5000)."""
    return max(1, round(n_train / 10))


def split_dataset(dataset: Dataset, config: DataConfig, seed: int) -> Splits:
    """Apply the limits, carve the validation split with a seeded permutation, keep the test split untouched."""
    n_train = len(dataset.y_train) if config.train_limit == 0 else min(config.train_limit, len(dataset.y_train))
    val_size = config.val_size or default_val_size(n_train)
    if val_size >= n_train:
        raise StressError(f"data.val_size ({val_size}) must be smaller than the {n_train} training images in use")
    permutation = np.random.default_rng(seed).permutation(n_train)
    val_indices = np.sort(permutation[:val_size])
    train_indices = np.sort(permutation[val_size:])
    n_test = len(dataset.y_test) if config.test_limit == 0 else min(config.test_limit, len(dataset.y_test))
    return Splits(
        train_x=dataset.x_train[train_indices],
        train_y=dataset.y_train[train_indices],
        val_x=dataset.x_train[val_indices],
        val_y=dataset.y_train[val_indices],
        test_x=dataset.x_test[:n_test],
        test_y=dataset.y_test[:n_test],
        val_indices=val_indices,
        source=dataset.source,
        sha256=dataset.sha256,
        class_names=dataset.class_names,
    )


def channel_stats(images: np.ndarray, decimals: int = 4) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) standard deviation of uint8 (N, C, H, W) images in [0, 1] units,
    rounded to `decimals` as published statistics are. Accumulated in float64 over chunks."""
    n, c = images.shape[:2]
    total = np.zeros(c)
    squares = np.zeros(c)
    for i in range(0, n, 4096):
        chunk = images[i : i + 4096].astype(np.float64) / 255.0
        total += chunk.sum(axis=(0, 2, 3))
        squares += np.square(chunk).sum(axis=(0, 2, 3))
    count = n * images.shape[2] * images.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    return tuple(round(float(m), decimals) for m in mean), tuple(round(float(s), decimals) for s in std)
