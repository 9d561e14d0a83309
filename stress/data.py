"""CIFAR-10 sources, input checks, the train/validation split and the dataset fingerprint.

Arrays are held as numpy uint8 (N, 3, 32, 32) images and int64 (N,) labels. Every
problem with user-supplied data raises StressError with a one-line message that
names the file and what is wrong.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stress.config import DataConfig
from stress.constants import CLASSES
from stress.errors import StressError
from stress.paths import check_regular_file, expand

NUM_CLASSES = len(CLASSES)
IMAGE_SHAPE = (32, 32, 3)  # H, W, C as stored on disk
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


@dataclass(frozen=True)
class Dataset:
    """The whole dataset after checks. Images uint8 (N, 3, 32, 32), labels int64 (N,)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    sha256: str  # fingerprint of the four arrays as loaded, before any limit


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
        }


def default_cache_dir() -> Path:
    """Where the torchvision download goes: $STRESS_DATA_DIR, else $XDG_CACHE_HOME/stress/cifar10, else ~/.cache/stress/cifar10."""
    if os.environ.get("STRESS_DATA_DIR"):
        return expand(os.environ["STRESS_DATA_DIR"], "$STRESS_DATA_DIR")
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "stress" / "cifar10"


def fingerprint(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of the arrays, in key order."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def check_arrays(x: np.ndarray, y: np.ndarray, split: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate one split (images NHWC uint8, labels integer in [0, 10)); return (NCHW uint8, int64 labels)."""
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8:
        raise StressError(f"{where}: x_{split} must be uint8, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.ndim != 4 or x.shape[1:] != IMAGE_SHAPE:
        raise StressError(f"{where}: x_{split} must have shape (N, 32, 32, 3), got {tuple(x.shape)}")
    if not isinstance(y, np.ndarray) or y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise StressError(
            f"{where}: y_{split} must be a 1-D integer array, got {getattr(y, 'dtype', '?')} {tuple(getattr(y, 'shape', ()))}"
        )
    if len(x) != len(y):
        raise StressError(f"{where}: x_{split} has {len(x)} images but y_{split} has {len(y)} labels")
    if len(y) == 0:
        raise StressError(f"{where}: the {split} split is empty")
    low, high = int(y.min()), int(y.max())
    if low < 0 or high >= NUM_CLASSES:
        raise StressError(f"{where}: y_{split} labels must be in [0, {NUM_CLASSES - 1}], found range [{low}, {high}]")
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)), y.astype(np.int64)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Read x_train, y_train, x_test, y_test from a .npz file (no pickles)."""
    try:
        archive_or_array = np.load(path, allow_pickle=False)
        if not isinstance(archive_or_array, np.lib.npyio.NpzFile):
            raise StressError(f"{path}: not a .npz archive (a single array); expected keys {', '.join(NPZ_KEYS)}")
        with archive_or_array as archive:
            missing = [k for k in NPZ_KEYS if k not in archive.files]
            if missing:
                raise StressError(
                    f"{path}: missing key(s) {', '.join(missing)}; expected {', '.join(NPZ_KEYS)}, found {', '.join(archive.files) or 'none'}"
                )
            return {k: archive[k] for k in NPZ_KEYS}
    except StressError:
        raise
    except PermissionError:
        raise StressError(f"{path}: permission denied") from None
    except (zipfile.BadZipFile, zlib.error, ValueError, EOFError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StressError(f"{path}: not a readable .npz file ({reason})") from None


class BatchUnpickler(pickle.Unpickler):
    """Unpickler for the official CIFAR-10 batch format, which needs only dicts, lists, bytes,
    strings, numbers and numpy arrays. Any other global (os.system, builtins.eval, ...) is
    refused before it can be called, so a booby-trapped file runs nothing."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # protocol-5 arrays
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused global {module}.{name}")


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    # The official CIFAR-10 python format is a pickle; it is the one pickle this project loads,
    # only from the folder the user names (or torchvision's own download), and only through
    # BatchUnpickler, which admits the classes that format needs and nothing else.
    try:
        with open(path, "rb") as handle:
            entry = BatchUnpickler(handle, encoding="bytes").load()
        data = np.asarray(entry[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        labels = np.asarray(entry[b"labels"], dtype=np.int64)
    except FileNotFoundError:
        raise StressError(f"{path}: missing (expected the official cifar-10-batches-py layout)") from None
    except pickle.UnpicklingError as exc:
        raise StressError(f"{path}: not a CIFAR-10 batch ({exc}); nothing in it was run") from None
    except Exception as exc:  # noqa: BLE001 - any failure to parse is a corrupt file
        raise StressError(f"{path}: not a readable CIFAR-10 batch ({type(exc).__name__})") from None
    return data, labels


def load_batches_folder(folder: Path) -> dict[str, np.ndarray]:
    """Read the official `cifar-10-batches-py` folder (or a folder that contains it)."""
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    for name in (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"):
        check_regular_file(folder / name, "a CIFAR-10 batch")
    train = [_read_batch(folder / f"data_batch_{i}") for i in range(1, 6)]
    x_test, y_test = _read_batch(folder / "test_batch")
    return {
        "x_train": np.concatenate([x for x, _ in train]),
        "y_train": np.concatenate([y for _, y in train]),
        "x_test": x_test,
        "y_test": y_test,
    }


def download_torchvision(root: Path) -> dict[str, np.ndarray]:
    """Download CIFAR-10 with torchvision into `root` under a file lock, then read the batches folder."""
    from filelock import FileLock
    from torchvision.datasets import CIFAR10

    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StressError(f"{root}: cannot create the data cache folder ({exc.strerror}); set STRESS_DATA_DIR") from None
    # One process per node downloads; the others wait on the lock and then find the files.
    with FileLock(str(root / ".download.lock")):
        try:
            CIFAR10(str(root), train=True, download=True)
            CIFAR10(str(root), train=False, download=True)
        except Exception as exc:  # noqa: BLE001 - network and checksum errors alike
            raise StressError(
                f"cannot download CIFAR-10 into {root} ({type(exc).__name__}); pass --data PATH to a local .npz or cifar-10-batches-py folder"
            ) from None
    return load_batches_folder(root)


def make_synthetic(n_train: int, n_test: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A learnable 10-class image set: each class is one shape in one colour, jittered, on a noisy background."""
    rng = np.random.default_rng(seed)
    palette = np.array(
        [[230, 60, 50], [50, 200, 60], [60, 90, 230], [230, 210, 40], [200, 60, 210],
         [40, 210, 210], [240, 140, 30], [140, 70, 30], [245, 245, 245], [120, 120, 120]],
        dtype=np.float32,
    )
    rows, cols = np.mgrid[0:32, 0:32].astype(np.float32)

    def shape_mask(label: int, cy: np.ndarray, cx: np.ndarray, size: np.ndarray) -> np.ndarray:
        dy, dx = rows[None] - cy[:, None, None], cols[None] - cx[:, None, None]  # (n, 32, 32)
        s = size[:, None, None]
        radius = np.sqrt(dy**2 + dx**2)
        masks = [
            radius <= s,  # disc
            (np.abs(dy) <= s) & (np.abs(dx) <= s),  # square
            (dy >= -s) & (dy <= s) & (np.abs(dx) <= (dy + s) / 2),  # triangle
            (np.abs(dy) <= s / 3) & (np.abs(dx) <= s * 1.4),  # horizontal bar
            (np.abs(dx) <= s / 3) & (np.abs(dy) <= s * 1.4),  # vertical bar
            ((np.abs(dx) <= s / 3) | (np.abs(dy) <= s / 3)) & (np.abs(dx) <= s) & (np.abs(dy) <= s),  # plus
            (radius <= s) & (radius >= s * 0.55),  # ring
            (np.abs(dx - dy) <= s / 3) & (np.abs(dx) <= s),  # diagonal
            (np.abs(dx) + np.abs(dy) <= s * 1.2),  # diamond
            ((np.floor((dx + 16) / 3) + np.floor((dy + 16) / 3)) % 2 == 0) & (np.abs(dx) <= s) & (np.abs(dy) <= s),  # checker
        ]
        return masks[label]

    def generate(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.arange(n) % NUM_CLASSES
        rng.shuffle(labels)
        background = rng.uniform(20, 110, size=(n, 1, 1, 3)).astype(np.float32)
        images = background + rng.normal(0, 18, size=(n, 32, 32, 3)).astype(np.float32)
        for label in range(NUM_CLASSES):
            idx = np.flatnonzero(labels == label)
            cy, cx = rng.uniform(11, 21, size=(2, len(idx)))
            size = rng.uniform(5, 8, size=len(idx))
            mask = shape_mask(label, cy, cx, size)  # (n_label, 32, 32)
            colour = palette[label] * rng.uniform(0.75, 1.1, size=(len(idx), 1))  # (n_label, 3)
            images[idx] = np.where(mask[..., None], colour[:, None, None, :], images[idx])
        images += rng.normal(0, 10, size=images.shape)
        return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)

    x_train, y_train = generate(n_train)
    x_test, y_test = generate(n_test)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def load_dataset(config: DataConfig) -> Dataset:
    """Load and check the source named by `config.source`."""
    source = config.source
    if source == "synthetic":
        raw = make_synthetic(config.synthetic_train, config.synthetic_test)
        where = "synthetic"
    elif source == "torchvision":
        root = default_cache_dir()
        raw = download_torchvision(root)
        where = str(root)
    else:
        path = expand(source, "--data")
        where = str(path)
        if not path.exists():
            raise StressError(f"{path}: no such file or folder (use --data torchvision | synthetic | PATH)")
        check_regular_file(path, "--data")
        if path.is_dir():
            raw = load_batches_folder(path)
        elif path.suffix == ".npz":
            raw = load_npz(path)
        else:
            raise StressError(f"{path}: unsupported data file; expected a .npz file or a cifar-10-batches-py folder")
    x_train, y_train = check_arrays(raw["x_train"], raw["y_train"], "train", where)
    x_test, y_test = check_arrays(raw["x_test"], raw["y_test"], "test", where)
    sha = fingerprint({"x_train": raw["x_train"], "y_train": raw["y_train"], "x_test": raw["x_test"], "y_test": raw["y_test"]})
    return Dataset(x_train, y_train, x_test, y_test, source=where, sha256=sha)


def split_dataset(dataset: Dataset, config: DataConfig, seed: int) -> Splits:
    """Apply the limits, carve the validation split with a seeded permutation, keep the test split untouched."""
    n_train = len(dataset.y_train) if config.train_limit == 0 else min(config.train_limit, len(dataset.y_train))
    if config.val_size >= n_train:
        raise StressError(f"data.val_size ({config.val_size}) must be smaller than the {n_train} training images in use")
    permutation = np.random.default_rng(seed).permutation(n_train)
    val_indices = np.sort(permutation[: config.val_size])
    train_indices = np.sort(permutation[config.val_size :])
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
    )
