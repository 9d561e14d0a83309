"""stress.data: synthetic, .npz, batches-folder and torchvision sources, input checks, fingerprint, split."""

from __future__ import annotations

import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from stress.config import DataConfig
from stress.constants import CLASSES

NUM_CLASSES = len(CLASSES)  # the small arrays are CIFAR-10-shaped
from stress.data import Dataset, default_cache_dir, fingerprint, load_dataset, make_synthetic, split_dataset
from stress.errors import StressError

SHARED_CIFAR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cifar10" / "cifar10.npz"


def small_arrays(n_train: int = 30, n_test: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    """Valid NHWC uint8 images and integer labels covering all classes."""
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
        "y_train": np.arange(n_train) % NUM_CLASSES,
        "x_test": rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8),
        "y_test": (np.arange(n_test) * 3) % NUM_CLASSES,
    }


def write_npz(path: Path, **overrides) -> Path:
    arrays = {**small_arrays(), **overrides}
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def load_error(source: Path | str) -> str:
    """The StressError message load_dataset raises for `source`; asserts it is one line naming the source."""
    with pytest.raises(StressError) as info:
        load_dataset(DataConfig(source=str(source)))
    message = str(info.value)
    assert "\n" not in message, message
    assert str(source) in message, message
    return message


# ---------------------------------------------------------------- synthetic


def test_synthetic_shapes_dtypes_and_balanced_classes():
    dataset = load_dataset(DataConfig(source="synthetic", synthetic_train=60, synthetic_test=30))
    assert dataset.x_train.shape == (60, 3, 32, 32) and dataset.x_train.dtype == np.uint8
    assert dataset.x_test.shape == (30, 3, 32, 32) and dataset.x_test.dtype == np.uint8
    assert dataset.y_train.dtype == np.int64 and dataset.y_test.dtype == np.int64
    assert np.bincount(dataset.y_train, minlength=10).tolist() == [6] * 10
    assert np.bincount(dataset.y_test, minlength=10).tolist() == [3] * 10
    assert dataset.source == "synthetic"
    assert len(CLASSES) == 10 and len(dataset.class_names) == 10
    # Not a constant image: the generator draws noise and shapes.
    assert dataset.x_train.std() > 10


def test_synthetic_is_deterministic_and_seed_dependent():
    first, second = make_synthetic(40, 20, seed=3), make_synthetic(40, 20, seed=3)
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
    other = make_synthetic(40, 20, seed=4)
    assert not np.array_equal(first["x_train"], other["x_train"])
    # Same seed through load_dataset gives the same fingerprint.
    config = DataConfig(source="synthetic", synthetic_train=40, synthetic_test=20)
    assert load_dataset(config).sha256 == load_dataset(config).sha256


def test_synthetic_classes_differ_in_mean_colour():
    # Each class is drawn in its own colour: class-mean images must be distinct.
    raw = make_synthetic(200, 10, seed=0)
    means = np.stack([raw["x_train"][raw["y_train"] == c].mean(axis=(0, 1, 2)) for c in range(10)])  # (10, 3)
    distances = np.linalg.norm(means[:, None] - means[None], axis=-1)
    assert distances[~np.eye(10, dtype=bool)].min() > 3


# ---------------------------------------------------------------- .npz


def test_valid_npz_is_transposed_to_nchw_and_labels_to_int64(tmp_path):
    arrays = small_arrays()
    path = write_npz(tmp_path / "ok.npz", y_train=arrays["y_train"].astype(np.uint8))
    dataset = load_dataset(DataConfig(source=str(path)))
    assert dataset.source == str(path)
    # Independent reference: element-wise NHWC -> NCHW.
    i, c, r, col = 7, 2, 5, 30
    assert dataset.x_train[i, c, r, col] == arrays["x_train"][i, r, col, c]
    np.testing.assert_array_equal(dataset.x_train, np.moveaxis(arrays["x_train"], -1, 1))
    np.testing.assert_array_equal(dataset.x_test, np.moveaxis(arrays["x_test"], -1, 1))
    assert dataset.y_train.dtype == np.int64
    np.testing.assert_array_equal(dataset.y_train, arrays["y_train"])
    assert dataset.x_train.flags["C_CONTIGUOUS"]


@pytest.mark.parametrize(
    "overrides, needle",
    [
        ({"y_test": None}, "missing key(s) y_test"),
        ({"x_train": np.zeros((30, 32, 32, 3), np.float32)}, "x_train must be uint8"),
        ({"x_test": np.zeros((20, 3, 32, 32), np.uint8)}, "x_test must have shape (N, S, S, 3)"),
        ({"x_train": np.zeros((30, 32, 32), np.uint8)}, "x_train must have shape"),
        ({"x_train": np.zeros((30, 32, 24, 3), np.uint8)}, "(square RGB images), got (30, 32, 24, 3)"),
        ({"x_train": np.zeros((30, 4, 4, 3), np.uint8), "x_test": np.zeros((20, 4, 4, 3), np.uint8)}, "S >= 8"),
        ({"x_test": np.zeros((20, 48, 48, 3), np.uint8)}, "train images are 32 pixels wide but test images 48"),
        ({"y_train": np.full(30, 0.5)}, "y_train must be a 1-D integer array"),
        ({"y_train": np.zeros((30, 1), np.int64)}, "y_train must be a 1-D integer array"),
        ({"y_train": np.arange(30) % 11, "class_names": np.array(CLASSES)}, "labels must be in [0, 9]"),
        ({"y_test": np.full(20, -1)}, "labels must be >= 0"),
        ({"y_train": np.arange(29) % 10}, "x_train has 30 images but y_train has 29 labels"),
        ({"x_test": np.zeros((0, 32, 32, 3), np.uint8), "y_test": np.zeros(0, np.int64)}, "test split is empty"),
        ({"y_train": np.where(np.arange(30) % 10 == 3, 4, np.arange(30) % 10)}, "class(es) 3 (cat) have no training images"),
        ({"y_train": np.zeros(30, np.int64), "y_test": np.zeros(20, np.int64)}, "a single class"),
        ({"class_names": np.array([1, 2, 3])}, "class_names must be a 1-D array of strings"),
        ({"class_names": np.array(["a", "b"] * 5)}, "class_names lists a name more than once"),
    ],
    ids=["missing-key", "float-images", "nchw-images", "3d-images", "non-square", "too-small", "mixed-sizes",
         "float-labels", "2d-labels", "label-too-big", "label-negative", "length-mismatch", "empty-split",
         "empty-class", "one-class", "names-not-strings", "names-repeated"],
)
def test_invalid_npz_raises_one_line_error_naming_the_file(tmp_path, overrides, needle):
    path = write_npz(tmp_path / "bad.npz", **overrides)
    message = load_error(path)
    assert needle in message


def test_truncated_npz(tmp_path):
    good = write_npz(tmp_path / "good.npz").read_bytes()
    path = tmp_path / "truncated.npz"
    path.write_bytes(good[: len(good) // 2])
    assert "not a readable .npz" in load_error(path)


def test_npz_with_corrupt_member_bytes(tmp_path):
    path = write_npz(tmp_path / "crc.npz")
    data = bytearray(path.read_bytes())
    middle = len(data) // 3  # inside x_train's pixel bytes
    data[middle : middle + 32] = bytes(b ^ 0xFF for b in data[middle : middle + 32])
    path.write_bytes(bytes(data))
    assert "not a readable .npz" in load_error(path)


@pytest.mark.parametrize("content", [b"", b"this is not a zip archive at all" * 10], ids=["empty", "text"])
def test_npz_that_is_not_an_archive(tmp_path, content):
    path = tmp_path / "junk.npz"
    path.write_bytes(content)
    load_error(path)


def test_npz_with_object_array_is_refused_without_unpickling(tmp_path):
    path = write_npz(tmp_path / "objects.npz", y_train=np.array([1, "a"] * 15, dtype=object))
    assert "not a readable .npz" in load_error(path)


def test_compressed_npz_with_invalid_deflate_stream(tmp_path):
    path = tmp_path / "deflate.npz"
    np.savez_compressed(path, **small_arrays())
    with zipfile.ZipFile(path) as archive:
        offset = archive.getinfo("x_train.npy").header_offset
    data = bytearray(path.read_bytes())
    name_length, extra_length = struct.unpack("<HH", data[offset + 26 : offset + 30])
    start = offset + 30 + name_length + extra_length  # first byte of the compressed member
    data[start : start + 16] = b"\xff" * 16  # deflate block type 3 is reserved: "invalid block type"
    path.write_bytes(bytes(data))
    load_error(path)


def test_plain_npy_named_npz(tmp_path):
    path = tmp_path / "plain.npz"
    with open(path, "wb") as handle:
        np.save(handle, np.zeros((2, 32, 32, 3), np.uint8))
    load_error(path)


def test_directory_named_npz(tmp_path):
    folder = tmp_path / "x.npz"
    folder.mkdir()
    load_error(folder)


def test_unsupported_extension(tmp_path):
    path = tmp_path / "cifar.csv"
    path.write_text("1,2,3\n")
    assert "unsupported data file" in load_error(path)


def test_missing_path(tmp_path):
    assert "no such file or folder" in load_error(tmp_path / "nowhere.npz")


# ---------------------------------------------------------------- cifar-10-batches-py folder


def write_batches_folder(parent: Path, per_batch: int = 4, n_test: int = 6, seed: int = 0) -> tuple[Path, np.ndarray, np.ndarray]:
    """Write the official layout: data_batch_1..5 and test_batch, each a pickled dict with bytes keys.

    Returns (folder, train images NCHW, test images NCHW) built from the rows directly.
    """
    rng = np.random.default_rng(seed)
    folder = parent / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rows_by_file = {}
    for name, n, offset in [(f"data_batch_{i}", per_batch, i) for i in range(1, 6)] + [("test_batch", n_test, 7)]:
        rows = rng.integers(0, 256, (n, 3072), dtype=np.uint8)  # official: 1024 R, then G, then B, row-major
        entry = {
            b"batch_label": name.encode(),
            b"labels": [int((offset * n + k) % 10) for k in range(n)],  # a plain list, as in the official files; all 10 classes in train
            b"data": rows,
            b"filenames": [f"{name}_{k}.png".encode() for k in range(n)],
        }
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
        rows_by_file[name] = rows

    def to_nchw(rows: np.ndarray) -> np.ndarray:
        # Reference by explicit indexing: pixel (c, r, col) sits at c*1024 + r*32 + col.
        out = np.empty((len(rows), 3, 32, 32), np.uint8)
        for c in range(3):
            for r in range(32):
                out[:, c, r, :] = rows[:, c * 1024 + r * 32 : c * 1024 + r * 32 + 32]
        return out

    train = np.concatenate([to_nchw(rows_by_file[f"data_batch_{i}"]) for i in range(1, 6)])
    return folder, train, to_nchw(rows_by_file["test_batch"])


def test_batches_folder_is_read_in_official_order(tmp_path):
    folder, train, test = write_batches_folder(tmp_path)
    dataset = load_dataset(DataConfig(source=str(folder)))
    assert dataset.x_train.shape == (20, 3, 32, 32) and dataset.x_test.shape == (6, 3, 32, 32)
    np.testing.assert_array_equal(dataset.x_train, train)
    np.testing.assert_array_equal(dataset.x_test, test)
    expected_train = [(4 * i + k) % 10 for i in range(1, 6) for k in range(4)]
    assert dataset.y_train.tolist() == expected_train
    assert dataset.y_test.tolist() == [(7 * 6 + k) % 10 for k in range(6)]
    assert dataset.class_names == CLASSES  # the batches folder is CIFAR-10
    assert dataset.y_train.dtype == np.int64


def test_folder_containing_the_batches_folder(tmp_path):
    folder, train, _ = write_batches_folder(tmp_path / "download")
    dataset = load_dataset(DataConfig(source=str(tmp_path / "download")))
    np.testing.assert_array_equal(dataset.x_train, train)
    assert load_dataset(DataConfig(source=str(folder))).sha256 == dataset.sha256


def test_batches_folder_with_a_missing_batch(tmp_path):
    folder, _, _ = write_batches_folder(tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(StressError) as info:
        load_dataset(DataConfig(source=str(folder)))
    message = str(info.value)
    assert "\n" not in message
    assert str(folder / "data_batch_3") in message and "missing" in message


def test_batches_folder_with_a_corrupt_batch(tmp_path):
    folder, _, _ = write_batches_folder(tmp_path)
    (folder / "test_batch").write_bytes(b"\x80\x02garbage")
    with pytest.raises(StressError) as info:
        load_dataset(DataConfig(source=str(folder)))
    assert str(folder / "test_batch") in str(info.value) and "\n" not in str(info.value)


def test_batches_folder_with_wrong_row_length(tmp_path):
    folder, _, _ = write_batches_folder(tmp_path)
    entry = {b"data": np.zeros((4, 100), np.uint8), b"labels": [0, 1, 2, 3]}
    (folder / "data_batch_2").write_bytes(pickle.dumps(entry, protocol=2))
    with pytest.raises(StressError, match="data_batch_2"):
        load_dataset(DataConfig(source=str(folder)))


# ---------------------------------------------------------------- torchvision source (no network)


def install_fake_cifar10(monkeypatch, init) -> list:
    """Replace torchvision.datasets.CIFAR10 with a class whose __init__ is `init`; return the call log."""
    import torchvision.datasets

    calls: list = []

    class FakeCIFAR10:
        def __init__(self, root, train=True, download=False, **kwargs):
            calls.append((root, train, download))
            init(Path(root), train)

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    return calls


def test_torchvision_download_failure_suggests_data_flag(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("STRESS_DATA_DIR", str(cache))

    def fail(root, train):
        raise RuntimeError("simulated: network unreachable\nsecond line")

    calls = install_fake_cifar10(monkeypatch, fail)
    with pytest.raises(StressError) as info:
        load_dataset(DataConfig(source="torchvision"))
    message = str(info.value)
    assert "--data" in message and str(cache) in message and "\n" not in message
    assert calls and calls[0][0] == str(cache) and calls[0][2] is True


def test_torchvision_source_reads_the_downloaded_folder(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("STRESS_DATA_DIR", str(cache))
    written = {}

    def fake_download(root, train):
        # torchvision extracts cifar-10-batches-py under root; emulate that once.
        if not (root / "cifar-10-batches-py").exists():
            written["arrays"] = write_batches_folder(root)

    calls = install_fake_cifar10(monkeypatch, fake_download)
    dataset = load_dataset(DataConfig(source="torchvision"))
    assert [train for _, train, _ in calls] == [True, False]
    np.testing.assert_array_equal(dataset.x_train, written["arrays"][1])
    assert dataset.source == str(cache)


def test_default_cache_dir_honours_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("STRESS_DATA_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("STRESS_DATA_DIR")
    assert default_cache_dir() == tmp_path / "xdg" / "stress" / "cifar10"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "stress" / "cifar10"


# ---------------------------------------------------------------- fingerprint


def test_fingerprint_is_stable_and_sees_one_pixel(tmp_path):
    arrays = small_arrays()
    reference = fingerprint(arrays)
    assert len(reference) == 64 and int(reference, 16) >= 0
    assert fingerprint({k: v.copy() for k, v in reversed(list(arrays.items()))}) == reference
    changed = {k: v.copy() for k, v in arrays.items()}
    changed["x_test"][3, 10, 11, 2] ^= 1
    assert fingerprint(changed) != reference
    # Same values, other dtype: a different dataset on disk.
    assert fingerprint({**arrays, "y_train": arrays["y_train"].astype(np.int32)}) != reference

    # Through load_dataset: the hash is of the file's arrays and follows one changed pixel.
    first = load_dataset(DataConfig(source=str(write_npz(tmp_path / "a.npz")))).sha256
    again = load_dataset(DataConfig(source=str(write_npz(tmp_path / "b.npz")))).sha256
    edited = {k: v.copy() for k, v in arrays.items()}
    edited["x_train"][0, 0, 0, 0] ^= 0x80
    changed_file = load_dataset(DataConfig(source=str(write_npz(tmp_path / "c.npz", x_train=edited["x_train"])))).sha256
    assert first == again == reference
    assert changed_file != first


# ---------------------------------------------------------------- split


def make_dataset(n_train: int = 50, n_test: int = 20) -> Dataset:
    images = np.arange(n_train, dtype=np.uint8)[:, None, None, None] * np.ones((1, 3, 32, 32), np.uint8)  # image i is all i
    test = (100 + np.arange(n_test, dtype=np.uint8))[:, None, None, None] * np.ones((1, 3, 32, 32), np.uint8)
    return Dataset(images, np.arange(n_train) % 10, test, np.arange(n_test) % 10, source="test", sha256="abc")


def test_split_carves_a_seeded_disjoint_validation_set():
    dataset = make_dataset()
    config = DataConfig(val_size=12)
    splits = split_dataset(dataset, config, seed=5)
    # Independent reference: the first val_size entries of numpy's seeded permutation.
    expected_val = np.sort(np.random.default_rng(5).permutation(50)[:12])
    np.testing.assert_array_equal(splits.val_indices, expected_val)
    train_ids = splits.train_x[:, 0, 0, 0].astype(int)
    val_ids = splits.val_x[:, 0, 0, 0].astype(int)
    assert val_ids.tolist() == expected_val.tolist()
    assert not set(train_ids) & set(val_ids)
    assert sorted(set(train_ids) | set(val_ids)) == list(range(50))
    np.testing.assert_array_equal(splits.train_y, dataset.y_train[train_ids])
    np.testing.assert_array_equal(splits.val_y, dataset.y_train[val_ids])
    np.testing.assert_array_equal(splits.test_x, dataset.x_test)
    np.testing.assert_array_equal(splits.test_y, dataset.y_test)
    assert splits.describe() == {"source": "test", "train": 38, "val": 12, "test": 20, "sha256": "abc", "classes": 10,
                                 "image_size": 32}
    assert set(splits.arrays()) == {"train_x", "train_y", "val_x", "val_y", "test_x", "test_y"}


def test_split_is_identical_for_a_seed_and_differs_for_another():
    dataset = make_dataset()
    config = DataConfig(val_size=10)
    a, b, c = (split_dataset(dataset, config, seed) for seed in (1, 1, 2))
    np.testing.assert_array_equal(a.val_indices, b.val_indices)
    np.testing.assert_array_equal(a.train_x, b.train_x)
    assert not np.array_equal(a.val_indices, c.val_indices)


def test_split_applies_limits():
    dataset = make_dataset(n_train=50, n_test=20)
    splits = split_dataset(dataset, DataConfig(val_size=5, train_limit=30, test_limit=8), seed=0)
    assert len(splits.train_y) == 25 and len(splits.val_y) == 5
    used = np.concatenate([splits.train_x[:, 0, 0, 0], splits.val_x[:, 0, 0, 0]]).astype(int)
    assert sorted(used.tolist()) == list(range(30))  # only the first 30 training images
    np.testing.assert_array_equal(splits.test_x, dataset.x_test[:8])
    # Limits larger than the data are clamped, not errors.
    clamped = split_dataset(dataset, DataConfig(val_size=5, train_limit=999, test_limit=999), seed=0)
    assert len(clamped.train_y) + len(clamped.val_y) == 50 and len(clamped.test_y) == 20


@pytest.mark.parametrize("val_size, train_limit", [(50, 0), (60, 0), (30, 30)])
def test_split_rejects_validation_as_large_as_training(val_size, train_limit):
    with pytest.raises(StressError, match="val_size"):
        split_dataset(make_dataset(n_train=50), DataConfig(val_size=val_size, train_limit=train_limit), seed=0)


# ---------------------------------------------------------------- the real CIFAR-10 copy, when present


@pytest.mark.skipif(not SHARED_CIFAR.is_file(), reason="no local CIFAR-10 copy at ../shared/data/cifar10")
def test_shared_cifar10_npz_loads_with_official_sizes_and_balance():
    dataset = load_dataset(DataConfig(source=str(SHARED_CIFAR)))
    assert dataset.x_train.shape == (50000, 3, 32, 32) and dataset.x_test.shape == (10000, 3, 32, 32)
    assert np.bincount(dataset.y_train, minlength=10).tolist() == [5000] * 10
    assert np.bincount(dataset.y_test, minlength=10).tolist() == [1000] * 10
    # The normalisation constants in stress.augment are the training-set channel means.
    from stress.augment import CIFAR10_MEAN

    means = dataset.x_train[:5000].mean(axis=(0, 2, 3)) / 255.0
    np.testing.assert_allclose(means, CIFAR10_MEAN, atol=0.01)


@pytest.mark.skipif(not SHARED_CIFAR.is_file(), reason="no local CIFAR-10 copy at ../shared/data/cifar10")
def test_the_local_cifar10_copy_trains_with_the_published_constants(tmp_path):
    """Its pixels were decoded from JPEG, so its measured statistics differ a little from the published ones; the
    default run uses the published constants, as a run on torchvision's download does."""
    from stress.config import ExperimentConfig, merge
    from stress.constants import CIFAR10_MEAN, CIFAR10_STD
    from stress.resolve import resolve

    config = merge(ExperimentConfig(), {"data.source": str(SHARED_CIFAR), "out": str(tmp_path)})
    splits = split_dataset(load_dataset(config.data), config.data, config.train.seed)
    resolution = resolve(config, splits)
    assert resolution.config.model.mean == CIFAR10_MEAN and resolution.config.model.std == CIFAR10_STD
    pixels = splits.train_x[:, :, ::4, ::4].astype(np.float64) / 255  # a quarter of the pixels: a plain numpy estimate
    assert np.abs(pixels.std(axis=(0, 2, 3)) - CIFAR10_STD).max() > 0.001  # the copy's own values are not the published ones
    assert "measured on the training split: mean 0.4908, 0.4819, 0.4465, std 0.2452, 0.2427, 0.2606" in resolution.input_stats


class _Payload:
    """Unpickling this calls os.system: a booby-trapped 'batch'."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [2, 5])
def test_a_booby_trapped_batch_is_refused_before_its_payload_runs(tmp_path, protocol):
    folder, _, _ = write_batches_folder(tmp_path)
    marker = tmp_path / "payload_ran"
    entry = {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 3], b"trap": _Payload(marker)}
    (folder / "data_batch_3").write_bytes(pickle.dumps(entry, protocol=protocol))
    # The check can fail: the plain unpickler runs the payload.
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Payload(control), protocol=protocol))
    assert control.exists()
    message = load_error(folder)
    assert "data_batch_3: not a CIFAR-10 batch (refused global" in message and "nothing in it was run" in message
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_the_batch_unpickler_reads_numpy_arrays_of_any_protocol(tmp_path, protocol):
    from stress.data import BatchUnpickler

    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    blob = pickle.dumps({b"data": array, b"labels": [1, 2, 3], b"name": "x"}, protocol=protocol)
    loaded = BatchUnpickler(__import__("io").BytesIO(blob), encoding="bytes").load()
    assert np.array_equal(loaded[b"data"], array) and loaded[b"labels"] == [1, 2, 3]


def test_special_files_are_refused_as_data_and_config(tmp_path):
    import os

    from stress.config import load_config_file

    fifo = tmp_path / "data.npz"
    os.mkfifo(fifo)  # reading a FIFO nobody writes to would block forever
    assert "not a regular file (--data must be a file, not a FIFO" in load_error(fifo)
    config_fifo = tmp_path / "config.yaml"
    os.mkfifo(config_fifo)
    with pytest.raises(StressError, match="not a regular file \\(--config must be a file"):
        load_config_file(config_fifo)


# ---------------------------------------------------------------- other datasets: classes, sizes, folders, downloads


def test_an_npz_with_100_classes_and_names_keeps_them(tmp_path):
    rng = np.random.default_rng(0)
    names = np.array([f"class_{i:03d}" for i in range(100)])
    path = write_npz(tmp_path / "c100.npz", y_train=np.arange(30) % 100, y_test=np.arange(20) % 100, class_names=names)
    # 30 training images cannot cover 100 classes: refused, naming the first empty class.
    assert "class(es) 30 (class_030)" in load_error(path)
    arrays = {"x_train": rng.integers(0, 256, (200, 32, 32, 3), dtype=np.uint8), "y_train": np.arange(200) % 100,
              "x_test": rng.integers(0, 256, (50, 32, 32, 3), dtype=np.uint8), "y_test": np.arange(50) % 100}
    np.savez(tmp_path / "ok.npz", **arrays, class_names=names)
    dataset = load_dataset(DataConfig(source=str(tmp_path / "ok.npz")))
    assert dataset.class_names == tuple(names) and dataset.image_size == 32
    assert np.bincount(dataset.y_train).tolist() == [2] * 100


def test_names_come_from_the_file_else_cifar10_for_10_classes_at_32_else_numbers(tmp_path):
    assert load_dataset(DataConfig(source=str(write_npz(tmp_path / "a.npz")))).class_names == CLASSES
    rng = np.random.default_rng(1)
    big = {"x_train": rng.integers(0, 256, (30, 48, 48, 3), dtype=np.uint8), "x_test": rng.integers(0, 256, (20, 48, 48, 3), dtype=np.uint8)}
    assert load_dataset(DataConfig(source=str(write_npz(tmp_path / "b.npz", **big)))).class_names == tuple(str(i) for i in range(10))
    given = DataConfig(source=str(tmp_path / "a.npz"), class_names=tuple("abcdefghij"))
    assert load_dataset(given).class_names == tuple("abcdefghij")
    with pytest.raises(StressError, match="data.class_names lists 3 names, but .* has 10 classes"):
        load_dataset(DataConfig(source=str(tmp_path / "a.npz"), class_names=("a", "b", "c")))


def test_image_size_resizes_like_pil_on_loading(tmp_path):
    from PIL import Image

    path = write_npz(tmp_path / "a.npz")
    dataset = load_dataset(DataConfig(source=str(path), image_size=64))
    assert dataset.x_train.shape == (30, 3, 64, 64) and dataset.x_test.shape == (20, 3, 64, 64)
    # Independent reference: PIL's bilinear resize (antialiased) of the first image, within one grey level.
    original = small_arrays()["x_train"][0]
    reference = np.asarray(Image.fromarray(original).resize((64, 64), Image.BILINEAR))
    assert np.abs(dataset.x_train[0].transpose(1, 2, 0).astype(int) - reference.astype(int)).max() <= 1
    # The fingerprint is of the file as stored: resizing is an option of the run, recorded in its config.
    assert dataset.sha256 == load_dataset(DataConfig(source=str(path))).sha256


def write_image_folder(root: Path, sizes=None, classes=("cat", "dog", "eel"), per_class=(4, 2)) -> dict:
    from PIL import Image

    rng = np.random.default_rng(0)
    written = {}
    for split, count in zip(("train", "test"), per_class):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True)
            for k in range(count):
                side = (sizes or {}).get((split, name, k), 24)
                pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{k}.png")
                written[(split, name, k)] = pixels
    return written


def test_an_image_folder_is_read_in_imagefolder_order(tmp_path):
    from torchvision.datasets import ImageFolder

    written = write_image_folder(tmp_path / "pets")
    (tmp_path / "pets" / "train" / "cat" / "notes.txt").write_text("not an image")
    dataset = load_dataset(DataConfig(source=str(tmp_path / "pets")))
    assert dataset.class_names == ("cat", "dog", "eel") and dataset.image_size == 24
    assert dataset.x_train.shape == (12, 3, 24, 24) and dataset.x_test.shape == (6, 3, 24, 24)
    # torchvision's ImageFolder, an independent reader, gives the same labels in the same order.
    reference = ImageFolder(str(tmp_path / "pets" / "train"))
    assert reference.classes == list(dataset.class_names)
    assert [label for _, label in reference.samples] == dataset.y_train.tolist()
    np.testing.assert_array_equal(dataset.x_train[0].transpose(1, 2, 0), written[("train", "cat", 0)])


def test_image_folder_errors_name_the_file(tmp_path):
    write_image_folder(tmp_path / "mixed", sizes={("train", "dog", 1): 20})
    assert "mixed/train/dog/1.png: image is 20x20 pixels, but the folder's first image is 24x24" in load_error(tmp_path / "mixed")
    write_image_folder(tmp_path / "extra")
    (tmp_path / "extra" / "test" / "fox").mkdir()
    assert "class folder(s) fox are not in" in load_error(tmp_path / "extra")
    write_image_folder(tmp_path / "broken")
    (tmp_path / "broken" / "train" / "eel" / "9.png").write_bytes(b"not a png")
    assert "broken/train/eel/9.png: not a readable image" in load_error(tmp_path / "broken")


def test_torchvision_cifar100_and_svhn_come_from_torchvision_under_the_cache(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setenv("STRESS_DATA_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    calls = []

    class FakeCIFAR100:
        classes = [f"c{i}" for i in range(100)]

        def __init__(self, root, train, download):
            calls.append(("cifar100", root, train, download))
            n = 200 if train else 100
            self.data = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
            self.targets = list(np.arange(n) % 100)

    class FakeSVHN:
        def __init__(self, root, split, download):
            calls.append(("svhn", root, split, download))
            n = 30 if split == "train" else 20
            self.data = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)  # SVHN is stored NCHW
            self.labels = np.arange(n) % 10

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", FakeCIFAR100)
    monkeypatch.setattr(torchvision.datasets, "SVHN", FakeSVHN)
    c100 = load_dataset(DataConfig(source="torchvision:cifar100"))
    assert c100.class_names == tuple(FakeCIFAR100.classes) and c100.x_train.shape == (200, 3, 32, 32)
    svhn = load_dataset(DataConfig(source="torchvision:svhn"))
    assert svhn.class_names == tuple("0123456789") and svhn.x_test.shape == (20, 3, 32, 32)
    assert [(c[0], Path(c[1]).name, c[2], c[3]) for c in calls] == [
        ("cifar100", "cifar100", True, True), ("cifar100", "cifar100", False, True),
        ("svhn", "svhn", "train", True), ("svhn", "svhn", "test", True)]
    with pytest.raises(StressError, match="torchvision:imagenet: unknown dataset; valid: torchvision:cifar10"):
        load_dataset(DataConfig(source="torchvision:imagenet"))


def test_synthetic_data_of_other_shapes_keeps_the_10_class_default_bit_identical():
    default = make_synthetic(60, 20, seed=0)
    same = make_synthetic(60, 20, seed=0, num_classes=10, size=32)
    assert all(np.array_equal(default[k], same[k]) for k in default)
    many = load_dataset(DataConfig(source="synthetic", synthetic_train=300, synthetic_test=100, synthetic_classes=100, synthetic_size=64))
    assert many.x_train.shape == (300, 3, 64, 64) and len(many.class_names) == len(set(many.class_names)) == 100
    assert np.bincount(many.y_train, minlength=100).min() == 3
