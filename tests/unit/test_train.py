"""stress.train (and the stress.evaluate helpers it uses): learning, determinism, identical starts, resume."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stress.analyses.failures import confusion_matrix
from stress.augment import CIFAR10_STATS, normalize
from stress.data import load_dataset, split_dataset
from stress.evaluate.predict import evaluate, predict_logits
from stress.models import create_model
from stress.train import build_model, epoch_generator, to_device_arrays, train_variant

HISTORY_FIELDS = {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds", "images_per_second", "precision", "device"}
TIMING_FIELDS = {"seconds", "images_per_second"}


def tensors_for(config) -> dict[str, torch.Tensor]:
    splits = split_dataset(load_dataset(config.data), config.data, config.train.seed)
    return to_device_arrays(splits.arrays(), "cpu")


def run(config, variant, data, **kwargs):
    """train_variant with a quiet log; returns (final state, list of (state, metrics) per epoch, log lines)."""
    epochs, lines = [], []
    state = train_variant(
        config, variant, data, on_epoch=lambda s, m: epochs.append((copy.deepcopy(s), dict(m))), log=lines.append, **kwargs
    )
    return state, epochs, lines


def assert_same_weights(first: dict, second: dict) -> None:
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


def without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in entry.items() if k not in TIMING_FIELDS} for entry in history]


@pytest.fixture(scope="module")
def tiny_data():
    """Arrays for the tiny config of conftest (200 train, 40 val, 40 test); built once per module."""
    from stress.config import ExperimentConfig, merge

    config = merge(
        ExperimentConfig(),
        {"data.source": "synthetic", "data.synthetic_train": 240, "data.synthetic_test": 40, "data.val_size": 40},
    )
    return tensors_for(config)


# ---------------------------------------------------------------- learning


def test_simple_cnn_learns_synthetic_data(tiny_config):
    # 1500 training images, 2 epochs, a half-width SimpleCNN (the full width is 3x slower on a shared CPU): chance is 0.1.
    config = tiny_config(
        **{
            "data.synthetic_train": 1800,
            "data.synthetic_test": 200,
            "data.val_size": 300,
            "model.widths": (16, 32, 64),
            "model.hidden": 128,
            "train.epochs": 2,
            "train.batch_size": 64,
            "train.lr": 3e-3,
            "train.eval_batch_size": 500,
        }
    )
    data = tensors_for(config)
    assert len(data["train_y"]) == 1500
    state, epochs, lines = run(config, "baseline", data)
    history = state["history"]
    assert history[-1]["val_acc"] > 0.5
    assert state["test"]["acc"] > 0.5
    assert history[-1]["train_loss"] < history[0]["train_loss"] < np.log(10) + 0.2
    assert len(lines) == 2 and "epoch 2/2" in lines[-1] and "test_acc" in lines[-1]


# ---------------------------------------------------------------- determinism and identical starts


def test_same_seed_gives_identical_weights(tiny_config, tiny_data):
    config = tiny_config()
    first, _, _ = run(config, "augmented", tiny_data)
    second, _, _ = run(config, "augmented", tiny_data)
    assert_same_weights(first["model"], second["model"])
    assert without_timing(first["history"]) == without_timing(second["history"])
    other, _, _ = run(tiny_config(**{"train.seed": 43}), "augmented", tiny_data)
    assert not torch.equal(other["model"]["features.conv1.weight"], first["model"]["features.conv1.weight"])


def test_variants_start_from_identical_weights_and_then_diverge(tiny_config, tiny_data):
    config = tiny_config(**{"train.epochs": 1})
    assert_same_weights(build_model(config).state_dict(), build_model(config).state_dict())
    other_seed = build_model(tiny_config(**{"train.seed": 7})).state_dict()
    assert not torch.equal(other_seed["features.conv1.weight"], build_model(config).state_dict()["features.conv1.weight"])

    initial = {}

    def capture(variant):
        def prepare(model):
            initial[variant] = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return model

        return prepare

    final = {v: run(config, v, tiny_data, prepare_model=capture(v))[0] for v in ("baseline", "augmented")}
    assert_same_weights(initial["baseline"], initial["augmented"])
    assert_same_weights(initial["baseline"], build_model(config).state_dict())
    # Same data order, different inputs: augmentation must change the trained weights.
    assert not torch.equal(final["baseline"]["model"]["features.conv1.weight"], final["augmented"]["model"]["features.conv1.weight"])


def test_epoch_generator_depends_on_seed_and_epoch():
    draws = {(s, e): torch.randperm(50, generator=epoch_generator(s, e)).tolist() for s in (1, 2) for e in (1, 2)}
    assert draws[(1, 1)] == torch.randperm(50, generator=epoch_generator(1, 1)).tolist()
    assert len({tuple(v) for v in draws.values()}) == 4


# ---------------------------------------------------------------- resume


def test_resume_from_epoch_one_is_bit_identical(tiny_config, tiny_data):
    config = tiny_config(**{"train.epochs": 3})
    uninterrupted, epochs, _ = run(config, "augmented", tiny_data)
    assert [s["epoch"] for s, _ in epochs] == [1, 2, 3]
    checkpoint = copy.deepcopy(epochs[0][0])
    resumed, resumed_epochs, lines = run(config, "augmented", tiny_data, resume=checkpoint)
    assert [s["epoch"] for s, _ in resumed_epochs] == [2, 3]
    assert resumed["epoch"] == 3
    assert_same_weights(uninterrupted["model"], resumed["model"])
    assert without_timing(resumed["history"]) == without_timing(uninterrupted["history"])
    assert resumed["test"] == uninterrupted["test"]
    assert "epoch 2/3" in lines[0]
    # The epoch-1 checkpoint itself was not modified by training on after it was taken.
    assert_same_weights(checkpoint["model"], epochs[0][0]["model"])
    assert not torch.equal(checkpoint["model"]["features.conv1.weight"], uninterrupted["model"]["features.conv1.weight"])


def test_resume_from_the_final_state_trains_nothing(tiny_config, tiny_data):
    config = tiny_config(**{"train.epochs": 1})
    final, _, _ = run(config, "baseline", tiny_data)
    again, epochs, lines = run(config, "baseline", tiny_data, resume=copy.deepcopy(final))
    assert epochs == [] and lines == []
    assert_same_weights(again["model"], final["model"])
    assert again["epoch"] == 1


# ---------------------------------------------------------------- recorded metrics


def test_history_and_test_metrics_are_complete_and_consistent(tiny_config, tiny_data):
    config = tiny_config()
    state, epochs, _ = run(config, "baseline", tiny_data)
    assert set(state) >= {"model", "optimizer", "epoch", "rng", "history", "config", "variant", "test"}
    assert state["variant"] == "baseline" and state["config"] == config.to_dict() and state["epoch"] == 2
    assert [entry["epoch"] for entry in state["history"]] == [1, 2]
    for entry in state["history"]:
        assert set(entry) == HISTORY_FIELDS
        assert (entry["precision"], entry["device"]) == ("fp32", "cpu")  # what --precision fp32 ran in, and where
        assert 0 <= entry["train_acc"] <= 1 and 0 <= entry["val_acc"] <= 1
        assert entry["train_loss"] > 0 and entry["val_loss"] > 0 and entry["seconds"] > 0
        # images_per_second is the number of training images seen over the epoch's time.
        assert entry["images_per_second"] * entry["seconds"] == pytest.approx(200, rel=1e-9)
    # Only the last epoch reports test metrics, and they match the returned state.
    assert "test_acc" not in epochs[0][1]
    last = epochs[-1][1]
    assert last["test_acc"] == state["test"]["acc"] and last["test_loss"] == state["test"]["loss"]
    assert epochs[0][0]["test"] is None

    # Independent check: re-evaluate the final weights by hand on val and test.
    model = create_model(config.model)
    model.load_state_dict(state["model"])
    model.eval()
    with torch.no_grad():
        for split, recorded in (("val", state["history"][-1]), ("test", {"val_loss": state["test"]["loss"], "val_acc": state["test"]["acc"]})):
            logits = model(normalize(tiny_data[f"{split}_x"]))
            labels = tiny_data[f"{split}_y"]
            assert recorded["val_acc"] == pytest.approx((logits.argmax(1) == labels).float().mean().item(), abs=1e-6)
            assert recorded["val_loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)


def test_data_parallel_rank_trains_on_its_shard(tiny_config, tiny_data):
    config = tiny_config(**{"train.epochs": 1})
    state, _, lines = run(config, "baseline", tiny_data, rank=1, world_size=2)
    assert state["history"][0]["images_per_second"] * state["history"][0]["seconds"] == pytest.approx(100, rel=1e-9)
    assert lines == []  # only rank 0 logs


def test_unknown_variant_is_rejected(tiny_config, tiny_data):
    with pytest.raises(ValueError, match="unknown variant"):
        train_variant(tiny_config(), "mixup", tiny_data, log=lambda line: None)


# ---------------------------------------------------------------- evaluate helpers


def test_evaluate_matches_manual_loss_and_accuracy_and_restores_mode(tiny_config, tiny_data):
    torch.manual_seed(0)
    model = create_model(tiny_config().model)
    model.train()
    images, labels = tiny_data["test_x"], tiny_data["test_y"]
    result = evaluate(model, images, labels, batch_size=7, stats=CIFAR10_STATS)  # batches that do not divide 40
    assert model.training
    with torch.no_grad():
        logits = model(normalize(images, CIFAR10_STATS))
    assert result["acc"] == pytest.approx((logits.argmax(1) == labels).float().mean().item(), abs=1e-7)
    assert result["loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)
    torch.testing.assert_close(predict_logits(model, images, batch_size=3, stats=CIFAR10_STATS), logits, rtol=1e-5, atol=1e-5)


def test_confusion_matrix_matches_a_loop():
    rng = np.random.default_rng(0)
    labels, predictions = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
    expected = np.zeros((4, 4), dtype=int)
    for true, predicted in zip(labels, predictions):
        expected[true, predicted] += 1
    np.testing.assert_array_equal(confusion_matrix(labels, predictions, 4), expected)


def test_cpu_training_data_shares_memory_with_the_object_store_arrays():
    # Object-store arrays are read-only shared memory; the CPU tensors must view them, not copy them.
    import numpy as np

    from stress.train import to_device_arrays

    images = np.zeros((4, 3, 32, 32), dtype=np.uint8)
    images.setflags(write=False)
    tensors = to_device_arrays({"train_x": images}, "cpu")
    assert tensors["train_x"].data_ptr() == images.ctypes.data


def test_batchnorm_is_synchronised_over_gpu_workers_only():
    """convert_sync_batchnorm only where torch's SyncBatchNorm runs (CUDA) and with more than one worker."""
    from torchvision.models import resnet18

    from stress.train import synchronised_batchnorm

    model = resnet18(num_classes=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for device, world in (("cpu", 2), ("cuda", 1), (torch.device("cpu"), 4)):
        assert synchronised_batchnorm(model, device, world) is model
    converted = synchronised_batchnorm(model, "cuda", 2)  # the conversion itself does not touch a GPU
    kinds = [type(m) for m in converted.modules()]
    assert torch.nn.SyncBatchNorm in kinds and torch.nn.BatchNorm2d not in kinds
    assert kinds.count(torch.nn.SyncBatchNorm) == sum(isinstance(m, torch.nn.BatchNorm2d) for m in resnet18().modules())
    after = converted.state_dict()  # the same keys and values: a model.pt still loads into the plain network
    assert list(after) == list(before) and all(torch.equal(after[k], before[k]) for k in before)


def test_cpu_data_parallel_training_says_batchnorm_stays_per_worker(tiny_config, tiny_data):
    factory = {"model.name": "tests.factories.resnet:resnet8"}
    config = tiny_config(**{"train.epochs": 1}, **factory)
    _, _, lines = run(config, "baseline", tiny_data, rank=0, world_size=2)
    assert lines[0] == "[baseline] BatchNorm statistics stay per worker on CPU (torch's SyncBatchNorm needs a GPU)"
    _, _, lines = run(tiny_config(**{"train.epochs": 1}), "baseline", tiny_data, rank=0, world_size=2)  # SimpleCNN: no BatchNorm
    assert not any("BatchNorm" in line for line in lines)


def test_the_training_identity_changes_with_the_options_and_the_split_a_trainer_is_given():
    """What decides whether a trainer may resume a checkpoint left under its name (stress.driver.cluster._train_worker)."""
    from stress.config import ExperimentConfig, merge
    from stress.train import training_identity

    config = merge(ExperimentConfig(), {"train.epochs": 2})
    labels = np.arange(30) % 10
    arrays = {"train_x": np.zeros((30, 3, 8, 8), np.uint8), "train_y": labels, "val_x": np.zeros((5, 3, 8, 8), np.uint8),
              "val_y": labels[:5]}
    same = training_identity(config, arrays)
    assert same == training_identity(merge(ExperimentConfig(), {"train.epochs": 2}), {k: v.copy() for k, v in arrays.items()})
    assert same == training_identity(merge(config, {"resources.task_cpus": 2, "stress.num_cases": 3}), arrays)  # not training options
    for changed in ({"train.lr": 0.01}, {"train.precision": "bf16"}, {"train.seed": 7}, {"model.hidden": 64}, {"data.val_size": 9}):
        assert training_identity(merge(config, changed), arrays) != same, changed
    # another fold of the label audit: the same options, other training labels (the fold count is no training option)
    assert training_identity(config, {**arrays, "train_y": np.roll(labels, 1)}) != same
    assert training_identity(config, {**arrays, "train_x": arrays["train_x"][:20], "train_y": labels[:20]}) != same
