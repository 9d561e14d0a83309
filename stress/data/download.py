"""torchvision's downloads: CIFAR-10, CIFAR-100 and SVHN, one downloader per node under a file lock."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from stress.data.files import load_batches_folder
from stress.errors import StressError
from stress.paths import expand

DOWNLOADS = ("cifar10", "cifar100", "svhn")  # --data torchvision:NAME; plain "torchvision" is cifar10
SVHN_CLASSES = tuple(str(d) for d in range(10))  # torchvision maps SVHN's label 10 ("0") to 0


def default_cache_dir() -> Path:
    """Where torchvision downloads go: $STRESS_DATA_DIR, else $XDG_CACHE_HOME/stress/cifar10, else ~/.cache/stress/cifar10.

    CIFAR-10 lies there directly (as before other datasets were known); others in a subfolder
    named after them."""
    if os.environ.get("STRESS_DATA_DIR"):
        return expand(os.environ["STRESS_DATA_DIR"], "$STRESS_DATA_DIR")
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "stress" / "cifar10"


def _locked(root: Path, name: str, fetch):
    from filelock import FileLock

    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StressError(f"{root}: cannot create the data cache folder ({exc.strerror}); set STRESS_DATA_DIR") from None
    # One process per node downloads; the others wait on the lock and then find the files.
    with FileLock(str(root / ".download.lock")):
        try:
            return fetch()
        except StressError:
            raise
        except Exception as exc:  # noqa: BLE001 - network and checksum errors alike
            raise StressError(
                f"cannot download {name} into {root} ({type(exc).__name__}); pass --data PATH to a local .npz, image folder "
                "or cifar-10-batches-py folder"
            ) from None


def download_torchvision(root: Path) -> dict[str, np.ndarray]:
    """Download CIFAR-10 with torchvision into `root` under a file lock, then read the batches folder."""
    from torchvision.datasets import CIFAR10

    def fetch():
        CIFAR10(str(root), train=True, download=True)
        CIFAR10(str(root), train=False, download=True)

    _locked(root, "CIFAR-10", fetch)
    return load_batches_folder(root)


def download_named(name: str, cache: Path) -> dict:
    """torchvision:NAME -> raw arrays with class_names (cifar10 through download_torchvision)."""
    if name not in DOWNLOADS:
        raise StressError(f"--data torchvision:{name}: unknown dataset; valid: {', '.join(f'torchvision:{d}' for d in DOWNLOADS)}")
    if name == "cifar10":
        return download_torchvision(cache)
    root = cache / name
    if name == "cifar100":
        from torchvision.datasets import CIFAR100

        def fetch():
            train, test = CIFAR100(str(root), train=True, download=True), CIFAR100(str(root), train=False, download=True)
            return {"x_train": np.asarray(train.data, dtype=np.uint8), "y_train": np.asarray(train.targets, dtype=np.int64),
                    "x_test": np.asarray(test.data, dtype=np.uint8), "y_test": np.asarray(test.targets, dtype=np.int64),
                    "class_names": tuple(train.classes)}
        return _locked(root, "CIFAR-100", fetch)
    from torchvision.datasets import SVHN

    def fetch():
        train, test = SVHN(str(root), split="train", download=True), SVHN(str(root), split="test", download=True)
        nhwc = lambda d: np.ascontiguousarray(np.asarray(d.data, dtype=np.uint8).transpose(0, 2, 3, 1))  # noqa: E731 - stored NCHW
        return {"x_train": nhwc(train), "y_train": np.asarray(train.labels, dtype=np.int64),
                "x_test": nhwc(test), "y_test": np.asarray(test.labels, dtype=np.int64), "class_names": SVHN_CLASSES}
    return _locked(root, "SVHN", fetch)
