"""A copy of tests/fixtures/run_small with a planted eval/browser.npz, for the failure-browser tests.

run_small has only six confident failures, so the planted file lists every wrong prediction of
each model (most confident first) as its failures: the page shows whatever the file lists. The
images are seeded random patterns and the maps seeded random 8 x 8 arrays, so a test can tell
any two images apart and check that the page drew the right one.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "run_small"
MODELS = ("baseline", "augmented")


def planted_browser_run(root: Path) -> Path:
    shutil.copytree(FIXTURE, root)
    rng = np.random.default_rng(7)
    with np.load(root / "eval" / "predictions.npz") as p:
        labels = p["labels"]
        failures = {}
        for v in MODELS:
            wrong = np.flatnonzero(~p[f"{v}_correct"])
            failures[v] = wrong[np.lexsort((wrong, -p[f"{v}_confidence"][wrong]))]
    indices = np.unique(np.concatenate(list(failures.values())))
    # Coarse 4 x 4 blocks of random colour, upsampled to 32 x 32: distinct images that survive JPEG.
    blocks = rng.integers(0, 256, size=(len(indices), 3, 4, 4), dtype=np.uint8)
    images = blocks.repeat(8, axis=2).repeat(8, axis=3)
    arrays = {"indices": indices.astype(np.int64), "images": images, "labels": labels[indices]}
    for v in MODELS:
        arrays[f"{v}_failures"] = failures[v].astype(np.int64)
        for kind in ("predicted", "true"):
            arrays[f"maps_{v}_{kind}"] = rng.integers(0, 256, size=(len(indices), 8, 8), dtype=np.uint8)
    np.savez(root / "eval" / "browser.npz", **arrays)
    # A few label suspects, so the filter has something to find.
    suspect = np.zeros(len(labels), dtype=bool)
    suspect[indices[::5]] = True
    np.savez(root / "eval" / "labels.npz", suspect=suspect)
    return root
