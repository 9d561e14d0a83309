"""Grad-CAM, its faithfulness curves and the randomisation sanity check, against slow references."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF

from stress.analyses.gradcam import (
    BLUR_KERNEL_SIZE,
    BLUR_SIGMA,
    ActivationsAndGradients,
    centre_energy_share,
    deletion_insertion,
    gaussian_blur,
    gradcam,
    gradcam_for_targets,
    normalize_maps,
    randomized_copy,
    sanity_check,
    spearman_rows,
)
from stress.config import ModelConfig
from stress.models import GRADCAM_LAYER, SimpleCNN


@pytest.fixture(scope="module", autouse=True)
def _few_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_model(seed: int = 0, config: ModelConfig = ModelConfig()) -> SimpleCNN:
    torch.manual_seed(seed)
    return SimpleCNN(config)


def make_images(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def reference_gradcam(model: SimpleCNN, image: torch.Tensor, target: int) -> torch.Tensor:
    """One image, no hooks: run features up to relu3 by hand, differentiate the logit, build the map."""
    names = [name for name, _ in model.features.named_children()]
    cut = names.index(GRADCAM_LAYER.split(".")[1]) + 1
    with torch.enable_grad():
        activations = model.features[:cut](image[None]).detach().requires_grad_(True)  # (1, K, 8, 8)
        logit = model.classifier(model.features[cut:](activations))[0, target]
        (gradient,) = torch.autograd.grad(logit, activations)
    weights = gradient[0].mean(dim=(1, 2))  # (K,)
    cam = torch.clamp((weights[:, None, None] * activations[0].detach()).sum(0), min=0)  # (8, 8)
    return F.interpolate(cam[None, None], size=(32, 32), mode="bilinear", align_corners=False)[0, 0]


# ---------------------------------------------------------------- gradcam


def test_gradcam_matches_per_image_reference():
    model = make_model().eval()
    images = make_images(6)
    targets = torch.tensor([0, 3, 9, 3, 5, 1])
    maps = gradcam(model, images, targets)
    assert maps.shape == (6, 32, 32) and maps.dtype == torch.float32
    assert (maps >= 0).all()
    expected = torch.stack([reference_gradcam(model, images[i], int(targets[i])) for i in range(6)])
    torch.testing.assert_close(maps, expected, atol=1e-5, rtol=1e-5)
    # The random model must give non-trivial maps here, or the comparison proves little.
    assert (maps.amax(dim=(1, 2)) > 0).sum() >= 3
    # Not normalised: the raw scale is kept.
    assert not torch.allclose(maps.amax(dim=(1, 2)), torch.ones(6))


def test_gradcam_chunking_and_no_grad_context_do_not_change_maps():
    model = make_model()
    images = make_images(7)
    targets = torch.arange(7) % 10
    whole = gradcam(model, images, targets)
    with torch.no_grad():
        chunked = gradcam(model, images, targets, batch_size=3)
    torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=1e-6)


def test_hook_gradient_equals_autograd_gradient():
    model = make_model().eval()
    images = make_images(3)
    with ActivationsAndGradients(model, GRADCAM_LAYER) as hooks:
        logits = model(images)
        assert hooks.activations.shape == (3, 128, 8, 8)
        (returned,) = torch.autograd.grad(logits[:, 2].sum(), hooks.activations)
    torch.testing.assert_close(hooks.gradients, returned, atol=0, rtol=0)
    # Output of the hooked model is unchanged by the hook.
    torch.testing.assert_close(logits, model(images), atol=1e-6, rtol=1e-6)


def test_hooks_released_mode_and_requires_grad_restored_no_param_grad():
    model = make_model()
    model.train()
    model.classifier[1].weight.requires_grad_(False)  # a frozen parameter must stay frozen
    flags = [p.requires_grad for p in model.parameters()]
    gradcam_for_targets(model, make_images(4), {"a": torch.zeros(4, dtype=torch.long), "b": torch.ones(4, dtype=torch.long)})
    assert model.training
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks for m in model.modules())


def test_hooks_released_after_exceptions():
    model = make_model()
    with pytest.raises(RuntimeError, match="boom"):
        with ActivationsAndGradients(model, GRADCAM_LAYER):
            assert len(model.features.relu3._forward_hooks) == 1
            raise RuntimeError("boom")
    assert not model.features.relu3._forward_hooks
    model.train()
    with pytest.raises((RuntimeError, IndexError)):
        gradcam(model, make_images(2), torch.tensor([0, 99]))  # class out of range fails inside
    assert all(not m._forward_hooks for m in model.modules())
    assert model.training and all(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="no module named"):
        ActivationsAndGradients(model, "features.nope")


def test_gradcam_for_targets_equals_separate_calls():
    model = make_model()
    images = make_images(5)
    predicted = model(images).argmax(1)
    true = torch.tensor([1, 2, 3, 4, 5])
    both = gradcam_for_targets(model, images, {"predicted": predicted, "true": true}, batch_size=2)
    assert set(both) == {"predicted", "true"}
    torch.testing.assert_close(both["predicted"], gradcam(model, images, predicted), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(both["true"], gradcam(model, images, true), atol=1e-6, rtol=1e-6)
    assert not torch.allclose(both["predicted"], both["true"])  # different targets, different maps


# ---------------------------------------------------------------- map statistics


def test_normalize_maps():
    maps = torch.zeros(3, 4, 4)
    maps[0, 1, 2] = 4.0
    maps[0, 0, 0] = 1.0
    maps[1] = 0.5
    normalised = normalize_maps(maps)
    assert normalised[0, 1, 2] == 1.0 and normalised[0, 0, 0] == 0.25
    assert torch.equal(normalised[1], torch.ones(4, 4))
    assert torch.equal(normalised[2], torch.zeros(4, 4))  # all-zero stays zero, no NaN


def test_centre_energy_share_hand_cases():
    maps = torch.zeros(5, 32, 32)
    maps[0, 8:24, 8:24] = torch.rand(16, 16) + 0.1  # mass only in the central 16x16 -> 1
    maps[1] = 3.0  # uniform -> area share 16*16/32/32 = 0.25
    maps[2, :8] = 1.0  # only border -> 0
    maps[2, :, 30:] = 2.0
    # maps[3] stays all zero -> area share, not NaN
    maps[4, 0, 0] = 1.0  # one unit on the border, three units in the centre -> 0.75
    maps[4, 8, 8] = 1.0
    maps[4, 23, 23] = 2.0
    shares = centre_energy_share(maps)
    torch.testing.assert_close(shares, torch.tensor([1.0, 0.25, 0.0, 0.25, 0.75]))
    # Another fraction: 0.25 of 32 -> 8x8 window at rows/cols 12..19.
    single = torch.zeros(1, 32, 32)
    single[0, 12, 12] = 1.0
    single[0, 11, 12] = 1.0
    assert centre_energy_share(single, 0.25).item() == pytest.approx(0.5)


# ---------------------------------------------------------------- deletion / insertion


def test_blur_matches_torchvision():
    images = make_images(2)
    expected = TF.gaussian_blur(images, kernel_size=[BLUR_KERNEL_SIZE] * 2, sigma=[BLUR_SIGMA] * 2)
    torch.testing.assert_close(gaussian_blur(images), expected, atol=1e-5, rtol=1e-5)


def probability(model, batch: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(batch).softmax(1).gather(1, targets.view(-1, 1))[:, 0]


def test_deletion_insertion_matches_slow_loop_on_hand_built_maps():
    model = make_model().eval()
    images = make_images(2)
    targets = torch.tensor([3, 7])
    steps = 8
    # Distinct values: a gradient from the bottom-right corner (image 0) and a random permutation (image 1).
    rows, cols = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    maps = torch.stack([rows * 32 + cols, torch.randperm(1024, generator=torch.Generator().manual_seed(5)).float().view(32, 32)])
    result = deletion_insertion(model, images, maps, targets, steps=steps, generator=torch.Generator().manual_seed(2), batch_size=50)

    for i in range(2):
        flat_map = maps[i].flatten().tolist()
        order = sorted(range(1024), key=lambda j: -flat_map[j])  # most important first
        blurred = TF.gaussian_blur(images[i : i + 1], kernel_size=[BLUR_KERNEL_SIZE] * 2, sigma=[BLUR_SIGMA] * 2)[0]
        deleted, inserted = [], []
        for s in range(steps + 1):
            chosen = torch.zeros(1024, dtype=torch.bool)
            chosen[order[: s * 1024 // steps]] = True
            chosen = chosen.view(32, 32)
            deleted.append(images[i].masked_fill(chosen, 0.0))
            inserted.append(torch.where(chosen, images[i], blurred))
        target = targets[i].repeat(steps + 1)
        torch.testing.assert_close(result["deletion"][i], probability(model, torch.stack(deleted), target), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(result["insertion"][i], probability(model, torch.stack(inserted), target), atol=1e-5, rtol=1e-4)


def test_deletion_insertion_endpoints_auc_and_random_order():
    model = make_model().eval()
    images = make_images(5)
    targets = torch.tensor([0, 1, 2, 3, 4])
    maps = gradcam(model, images, targets)
    steps = 6
    result = deletion_insertion(model, images, maps, targets, steps=steps, generator=torch.Generator().manual_seed(3))
    clean = probability(model, images, targets)
    zeros = probability(model, torch.zeros_like(images), targets)
    blurred = probability(model, TF.gaussian_blur(images, [BLUR_KERNEL_SIZE] * 2, [BLUR_SIGMA] * 2), targets)
    for prefix in ("", "random_"):
        deletion, insertion = result[f"{prefix}deletion"], result[f"{prefix}insertion"]
        assert deletion.shape == insertion.shape == (5, steps + 1)
        torch.testing.assert_close(deletion[:, 0], clean, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(deletion[:, -1], zeros, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(insertion[:, 0], blurred, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(insertion[:, -1], clean, atol=1e-6, rtol=1e-5)
        for name in ("deletion", "insertion"):
            curve = result[f"{prefix}{name}"].numpy()
            x = np.array([s * 1024 // steps / 1024 for s in range(steps + 1)])
            expected = np.trapezoid(curve, x=x, axis=1)
            np.testing.assert_allclose(result[f"{prefix}{name}_auc"].numpy(), expected, rtol=1e-5, atol=1e-7)
    # 1024 pixels do not split evenly in 6 steps: x is the exact fraction removed (floor(s*1024/6)/1024).
    torch.testing.assert_close(result["fraction"], torch.tensor([s * 1024 // steps / 1024 for s in range(steps + 1)]))
    # The map order and the random order differ, so the middle of the curves differs.
    assert not torch.allclose(result["deletion"][:, 1:-1], result["random_deletion"][:, 1:-1])
    # Same generator seed -> same random curves; an all-zero map has only ties -> the random order.
    again = deletion_insertion(model, images, torch.zeros_like(maps), targets, steps=steps, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(again["random_deletion"], result["random_deletion"], atol=0, rtol=0)
    torch.testing.assert_close(again["deletion"], again["random_deletion"], atol=0, rtol=0)
    torch.testing.assert_close(again["insertion"], again["random_insertion"], atol=0, rtol=0)


# ---------------------------------------------------------------- randomisation sanity check


def test_spearman_rows_matches_scipy_with_ties():
    generator = torch.Generator().manual_seed(4)
    first = torch.relu(torch.randn(4, 16, 16, generator=generator)).round(decimals=1)  # many zeros and ties
    second = torch.relu(torch.randn(4, 16, 16, generator=generator))
    second[0] = first[0] ** 2 + 1  # monotone transform -> exactly 1
    correlations = spearman_rows(first, second)
    for i in range(4):
        expected = scipy.stats.spearmanr(first[i].flatten().numpy(), second[i].flatten().numpy()).statistic
        assert correlations[i].item() == pytest.approx(expected, abs=1e-9)
    assert correlations[0].item() == pytest.approx(1.0, abs=1e-12)
    assert torch.isnan(spearman_rows(torch.zeros(1, 16, 16), first[:1])).all()  # constant row: undefined


def test_randomized_copy_redraws_every_weight_reproducibly():
    model = make_model()
    before = {name: p.clone() for name, p in model.state_dict().items()}
    global_state = torch.get_rng_state()
    first = randomized_copy(model, torch.Generator().manual_seed(9))
    second = randomized_copy(model, torch.Generator().manual_seed(9))
    other = randomized_copy(model, torch.Generator().manual_seed(10))
    assert torch.equal(torch.get_rng_state(), global_state)  # global RNG untouched
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name])  # original untouched
        assert not torch.equal(first.state_dict()[name], value)
        assert torch.equal(first.state_dict()[name], second.state_dict()[name])
        assert not torch.equal(first.state_dict()[name], other.state_dict()[name])
        # Same initial scale as the layer's default init (uniform +-1/sqrt(fan_in) bound).
        assert first.state_dict()[name].abs().max() <= value.abs().max() * 1.5 + 1e-6


def test_sanity_check_matches_scipy_and_self_correlation_is_one():
    model = make_model()
    images = make_images(6)
    targets = model(images).argmax(1)
    result = sanity_check(model, images, targets, generator=torch.Generator().manual_seed(11))
    trained = gradcam(model, images, targets).flatten(1).numpy()
    randomised = gradcam(randomized_copy(model, torch.Generator().manual_seed(11)), images, targets).flatten(1).numpy()
    expected = np.array([scipy.stats.spearmanr(trained[i], randomised[i]).statistic for i in range(6)])
    np.testing.assert_allclose(result["correlations"].numpy(), expected, atol=1e-9, equal_nan=True)
    defined = expected[~np.isnan(expected)]
    assert result["undefined"] == int(np.isnan(expected).sum())
    assert result["mean"] == pytest.approx(defined.mean(), abs=1e-9)
    assert result["median"] == pytest.approx(np.median(defined), abs=1e-9)
    # A model compared with itself: every map with any spread correlates perfectly.
    maps = gradcam(model, images, targets)
    self_correlation = spearman_rows(maps, maps)
    spread = maps.flatten(1).amax(1) > maps.flatten(1).amin(1)
    assert spread.any()
    torch.testing.assert_close(self_correlation[spread], torch.ones(int(spread.sum()), dtype=torch.float64))


# ---------------------------------------------------------------- a small trained case


def make_square_images(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Noise with one 8x8 square at a random place: class 0 = reddish, class 1 = bluish. Returns images, labels, (row, col)."""
    images = 0.3 * torch.randn(n, 3, 32, 32, generator=generator)
    labels = torch.randint(0, 2, (n,), generator=generator)
    corners = torch.randint(0, 24, (n, 2), generator=generator)
    for i in range(n):
        row, col = corners[i].tolist()
        images[i, 2 * int(labels[i]), row : row + 8, col : col + 8] += 2.0
        images[i, 1, row : row + 8, col : col + 8] += 1.0
    return images, labels, corners


def test_trained_model_maps_find_the_evidence():
    """A model trained to tell square colours should look at the square; deletion along its map hurts fastest."""
    generator = torch.Generator().manual_seed(0)
    model = make_model(0, ModelConfig(widths=(8, 16, 32), hidden=32, num_classes=2))
    images, labels, _ = make_square_images(512, generator)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        batch = torch.randint(0, 512, (64,), generator=generator)
        loss = F.cross_entropy(model(images[batch]), labels[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.zero_grad(set_to_none=True)
    test_images, test_labels, corners = make_square_images(64, generator)
    assert (model(test_images).argmax(1) == test_labels).float().mean() >= 0.95

    maps = gradcam(model, test_images, test_labels)
    shares = []  # share of map mass in a 12x12 window around each square (area share 0.14)
    for i in range(64):
        row, col = corners[i].tolist()
        window = maps[i, max(row - 2, 0) : row + 10, max(col - 2, 0) : col + 10]
        shares.append(float(window.sum() / maps[i].sum().clamp_min(1e-12)))
    assert np.mean(shares) > 0.25

    curves = deletion_insertion(model, test_images, maps, test_labels, steps=16)
    assert curves["deletion_auc"].mean() < curves["random_deletion_auc"].mean() - 0.2

    result = sanity_check(model, test_images, test_labels, generator=torch.Generator().manual_seed(1))
    assert result["mean"] < 0.5  # maps of a re-initialised model look different
