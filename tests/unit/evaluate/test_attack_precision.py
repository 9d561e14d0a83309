"""attack_shard's `precision`: the attacked model's passes run in it, and its clean predictions are the evaluate path's.

The reference is stress.evaluate.predict.predict_logits, the evaluate stage's forward pass, which
shares no code with the attack's wrapper. A planted model whose two top logits differ by less than
bf16 resolves tells the precisions apart: fp32 predicts one class on every image, bf16 ties them and
predicts the other, so a wrapper that ignored `precision` fails the bf16 comparison.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from stress.augment import input_stats
from stress.config import ModelConfig
from stress.evaluate.predict import predict_logits
from stress.evaluate.probe_shards import AutocastModel, attack_shard, under_precision
from stress.models import create_model
from stress.perturb.pgd import Attack

CONFIG = ModelConfig(widths=(8, 16, 32), hidden=32)
MODEL_DICT = json.loads(json.dumps(dataclasses.asdict(CONFIG)))  # as config.to_dict()["model"] gives it to the stage


def _near_tie_weights() -> dict[str, torch.Tensor]:
    """Classes 0 and 1 share their output row; class 1's bias is 1e-3 higher, below bf16's step near the logit (2^-7
    at 1), and every other class is far behind. fp32 predicts class 1 everywhere, bf16 a tie that argmax gives to 0."""
    torch.manual_seed(0)
    model = create_model(CONFIG)
    last = model.classifier[-1]
    with torch.no_grad():
        last.weight[1] = last.weight[0]
        last.bias[0] = 1.0
        last.bias[1] = 1.001
        last.bias[2:] = -100.0
    return model.state_dict()


def _images(n: int = 16) -> tuple[np.ndarray, np.ndarray]:
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator).numpy()
    return images, np.ones(n, dtype=np.int64)


def _reference_correct(weights: dict, images: np.ndarray, labels: np.ndarray, precision: str) -> np.ndarray:
    model = create_model(CONFIG)
    model.load_state_dict(weights)
    logits = predict_logits(model.eval(), torch.from_numpy(images), precision=precision, stats=input_stats(CONFIG))
    return (logits.argmax(1) == torch.from_numpy(labels)).numpy()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_attacks_clean_predictions_are_the_evaluate_paths_in_the_same_precision(precision):
    weights, (images, labels) = _near_tie_weights(), _images()
    out = attack_shard({"m": weights}, MODEL_DICT, images, labels, 0, len(labels), [("linf", 1 / 255)], steps=2,
                       autoattack=False, device="cpu", precision=precision)
    expected = _reference_correct(weights, images, labels, precision)
    np.testing.assert_array_equal(out["m|clean"], expected)
    # The plant separates the precisions: fp32 gets every image right, bf16 none (a tie goes to class 0).
    other = _reference_correct(weights, images, labels, "bf16" if precision == "fp32" else "fp32")
    assert expected.all() != other.all() and not (expected == other).any()


def test_under_bf16_the_logits_and_the_input_gradient_are_float32_and_fp32_is_left_unwrapped():
    torch.manual_seed(0)
    model = create_model(CONFIG).eval()
    assert under_precision(model, "fp32", torch.device("cpu")) is model
    wrapped = under_precision(model, "bf16", torch.device("cpu"))
    assert isinstance(wrapped, AutocastModel)
    x = torch.randn(4, 3, 32, 32, requires_grad=True)
    logits = wrapped(x)
    (gradient,) = torch.autograd.grad(logits.sum(), x)
    assert logits.dtype == torch.float32 and gradient.dtype == torch.float32 and torch.isfinite(gradient).all()
    # the passes did run in bf16: the logits are bf16 values, which the fp32 model's are not
    assert torch.equal(logits, logits.bfloat16().float())
    assert not torch.equal(model(x), model(x).bfloat16().float())


def test_bf16_attacks_run_pgd_and_autoattack_and_fool_an_undefended_model():
    pytest.importorskip("torchattacks")
    torch.manual_seed(0)
    model = create_model(CONFIG).eval()
    images, _ = _images(12)
    labels = predict_logits(model, torch.from_numpy(images), stats=input_stats(CONFIG), precision="bf16").argmax(1).numpy()
    attacks = [(a.norm, a.eps) for a in (Attack("linf", 8 / 255), Attack("l2", 0.5))]
    out = attack_shard({"m": model.state_dict()}, MODEL_DICT, images, labels, 0, len(labels), attacks, steps=5,
                       device="cpu", precision="bf16")
    assert out["m|clean"].all()  # the labels are the bf16 model's own predictions
    # An untrained network is fooled at 8/255 by PGD and AutoAttack alike (both run through the bf16 wrapper).
    assert out["m|linf_8/255"].mean() >= 0.9 and out["m|autoattack"].mean() <= 0.1


class _NoAttack:
    """Stands in for torchattacks.AutoAttack: records whether the model it was given runs in bf16, and returns the
    images unchanged, so "still correct after AutoAttack" is the given model's clean prediction."""

    ran_in_bf16: list[bool] = []

    def __init__(self, model, **options):
        self.model = model

    def __call__(self, x, y):
        with torch.no_grad():
            logits = self.model(x)
        _NoAttack.ran_in_bf16.append(bool(torch.equal(logits, logits.bfloat16().float())))
        return x


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_autoattack_and_its_robustness_check_run_in_the_attack_precision(precision, monkeypatch):
    torchattacks = pytest.importorskip("torchattacks")
    monkeypatch.setattr(torchattacks, "AutoAttack", _NoAttack)
    _NoAttack.ran_in_bf16 = []
    weights, (images, labels) = _near_tie_weights(), _images(8)
    out = attack_shard({"m": weights}, MODEL_DICT, images, labels, 0, len(labels), [("linf", 1 / 255)], steps=1,
                       autoattack=True, device="cpu", precision=precision)
    assert _NoAttack.ran_in_bf16 == [precision == "bf16"]  # one batch, attacked through the precision's wrapper
    # Unchanged images: the robustness check's flags are the evaluate path's clean predictions in that precision,
    # which the near tie sets apart (all correct in fp32, none in bf16).
    np.testing.assert_array_equal(out["m|autoattack"], _reference_correct(weights, images, labels, precision))
    assert str(out["precision"]) == precision


def test_grad_cam_stays_fp32_under_bf16_attacks(monkeypatch):
    import stress.analyses.gradcam as gradcam_module

    calls = []
    real = gradcam_module.gradcam

    def spy(model, inputs, targets, layer=None, precision="fp32", **options):
        calls.append((precision, torch.is_autocast_enabled("cpu"), inputs.dtype))
        return real(model, inputs, targets, layer, precision=precision, **options)

    monkeypatch.setattr(gradcam_module, "gradcam", spy)
    torch.manual_seed(0)
    model = create_model(CONFIG).eval()
    images, _ = _images(6)
    labels = predict_logits(model, torch.from_numpy(images), stats=input_stats(CONFIG), precision="bf16").argmax(1).numpy()
    out = attack_shard({"m": model.state_dict()}, MODEL_DICT, images, labels, 0, len(labels), [("linf", 8 / 255)], steps=3,
                       autoattack=False, device="cpu", precision="bf16")
    assert (out["m|flip"] >= 0).any() and calls  # images flipped, so their maps were drawn
    assert set(calls) == {("fp32", False, torch.float32)}


def test_the_attacked_model_stays_in_eval_mode_after_autoattack(monkeypatch):
    """torchattacks puts back the training mode it finds on the model it is given: a wrapper that reported a new
    module's training=True would leave the network training for the batches after the first (BatchNorm on batch
    statistics)."""
    pytest.importorskip("torchattacks")
    import stress.evaluate.probe_shards as module

    loaded = []
    real = module.load_model

    def keep(*arguments, **options):
        loaded.append(real(*arguments, **options))
        return loaded[-1]

    monkeypatch.setattr(module, "load_model", keep)
    torch.manual_seed(0)
    model = create_model(CONFIG).eval()
    images, _ = _images(4)
    labels = np.zeros(4, dtype=np.int64)
    for precision in ("fp32", "bf16"):
        attack_shard({"m": model.state_dict()}, MODEL_DICT, images, labels, 0, 4, [("linf", 8 / 255)], steps=1,
                     autoattack=True, batch_size=2, device="cpu", precision=precision)
    assert len(loaded) == 2 and not any(m.training for network in loaded for m in network.modules())


def test_the_log_names_auto_on_gpu_tasks_from_a_driver_without_a_gpu(monkeypatch):
    from stress.driver.probe_stages import expected_precision
    from stress.precision import resolve_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert expected_precision("auto", on_gpus=True).startswith("auto")  # the GPU decides; the driver cannot tell
    assert expected_precision("bf16", on_gpus=True) == "bf16" and expected_precision("fp32", on_gpus=True) == "fp32"
    assert expected_precision("auto", on_gpus=False) == resolve_precision("auto", "cpu")


def test_the_same_class_similarity_maps_the_clean_prediction_on_the_adversarial_image(monkeypatch):
    """cam_same_class correlates the clean map with the adversarial image's map of the clean prediction's class; the
    reference redraws both maps with stress.analyses.gradcam and correlates them with numpy. Planted: the adversarial
    prediction's class in its place is cam_adversarial, which differs from it on images whose class the attack changed."""
    import stress.analyses.gradcam as gradcam_module

    calls = []
    real = gradcam_module.gradcam

    def spy(model, inputs, targets, layer=None, precision="fp32", **options):
        calls.append((inputs.detach().clone(), targets.detach().clone()))
        return real(model, inputs, targets, layer, precision=precision, **options)

    monkeypatch.setattr(gradcam_module, "gradcam", spy)
    torch.manual_seed(0)
    model = create_model(CONFIG).eval()
    images, _ = _images(12)
    labels = predict_logits(model, torch.from_numpy(images), stats=input_stats(CONFIG)).argmax(1).numpy()  # all correct clean
    out = attack_shard({"m": model.state_dict()}, MODEL_DICT, images, labels, 0, len(labels), [("linf", 8 / 255)], steps=3,
                       autoattack=False, device="cpu")
    flipped = np.flatnonzero(out["m|flip"] >= 0)
    assert flipped.size >= 2 and len(calls) == 4  # clean, adversarial, adversarial for the clean class, random signs
    (clean_x, clean_t), (adv_x, adv_t), (same_x, same_t), _ = calls
    assert torch.equal(same_x, adv_x) and torch.equal(same_t, clean_t) and not torch.equal(adv_t, clean_t)
    a, b = real(model, clean_x, clean_t).flatten(1).numpy(), real(model, same_x, clean_t).flatten(1).numpy()
    expected = [np.corrcoef(x, y)[0, 1] for x, y in zip(a, b)]
    np.testing.assert_allclose(out["m|cam_same_class"][flipped], expected, rtol=1e-5, atol=1e-6)
    assert np.isnan(out["m|cam_same_class"][out["m|flip"] < 0]).all()
    assert not np.allclose(out["m|cam_same_class"][flipped], out["m|cam_adversarial"][flipped])
