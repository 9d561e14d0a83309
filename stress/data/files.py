"""Datasets on disk: .npz archives, the official CIFAR-10 batches folder, and image folders.

Each reader returns raw arrays {x_train, y_train, x_test, y_test} (images NHWC uint8) and, where
the files name them, class_names; stress.data.dataset checks them. Every problem is a
StressError with one line naming the file.
"""

from __future__ import annotations

import pickle
import zipfile
import zlib
from pathlib import Path

import numpy as np

from stress.errors import StressError
from stress.paths import check_regular_file

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff")  # torchvision's


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Read x_train, y_train, x_test, y_test (and class_names, when present) from a .npz file (no pickles)."""
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
            arrays = {k: archive[k] for k in NPZ_KEYS}
            if "class_names" in archive.files:
                names = archive["class_names"]
                if names.ndim != 1 or names.dtype.kind not in "US":
                    raise StressError(f"{path}: class_names must be a 1-D array of strings, got {names.dtype} {names.shape}")
                arrays["class_names"] = tuple(str(n) for n in names.astype(str))
            return arrays
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


def is_image_folder(folder: Path) -> bool:
    """An ImageFolder-style dataset: train/ and test/ subfolders (CIFAR-10's batches folder has neither)."""
    return (folder / "train").is_dir() and (folder / "test").is_dir()


def _class_folders(split: Path) -> list[Path]:
    return sorted(p for p in split.iterdir() if p.is_dir() and not p.name.startswith("."))


def _read_split(split: Path, classes: list[str], size: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    from PIL import Image, UnidentifiedImageError

    images, labels = [], []
    for label, name in enumerate(classes):
        folder = split / name
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS) if folder.is_dir() else []
        for path in files:
            try:
                with Image.open(path) as image:
                    pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                raise StressError(f"{path}: not a readable image ({type(exc).__name__})") from None
            if size is None:
                size = pixels.shape[:2]
            elif pixels.shape[:2] != size:
                raise StressError(f"{path}: image is {pixels.shape[1]}x{pixels.shape[0]} pixels, but the folder's first image is "
                                  f"{size[1]}x{size[0]}; give images of one size (or resize them with --image-size)")
            images.append(pixels)
            labels.append(label)
    if not images:
        raise StressError(f"{split}: no images ({', '.join(IMAGE_EXTENSIONS)}) in its class folders")
    return np.stack(images), np.asarray(labels, dtype=np.int64), size


def load_image_folder(folder: Path) -> dict:
    """torchvision's ImageFolder layout: folder/train/<class>/*.png and folder/test/<class>/*.png.

    Classes are the train/ subfolders in sorted order (as ImageFolder numbers them); test/ may
    hold fewer of them, not others. Images are read as RGB and must all have one size.
    """
    train, test = folder / "train", folder / "test"
    classes = [p.name for p in _class_folders(train)]
    if len(classes) < 2:
        raise StressError(f"{train}: needs one subfolder per class (at least 2), found {len(classes)}")
    unknown = sorted({p.name for p in _class_folders(test)} - set(classes))
    if unknown:
        raise StressError(f"{test}: class folder(s) {', '.join(unknown)} are not in {train}")
    x_train, y_train, size = _read_split(train, classes, None)
    x_test, y_test, _ = _read_split(test, classes, size)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test, "class_names": tuple(classes)}
