"""ROAD faithfulness: the imputation against a sparse direct solve, and planted cases where the answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.sparse import lil_matrix
from scipy.sparse.linalg import spsolve

from stress.analyses.explanations import summarise_road
from stress.analyses.faithfulness import impute, neighbour_sum, road_curves, structured_random_maps
from stress.analyses.gradcam import cam_resolution, gradcam, randomized_copy
from stress.config import ModelConfig
from stress.models import SimpleCNN
from stress.report.observations import road_verdict
from stress.report.statements import EFFECT, NO_EFFECT


def imputation_reference(image: np.ndarray, keep: np.ndarray, direct: float = 1 / 6, diagonal: float = 1 / 12) -> np.ndarray:
    """Slow loop: one equation per removed pixel, sum_j w_j (x_i - x_j) = 0 over its in-image
    neighbours, kept neighbours on the right-hand side; solved by scipy's sparse LU."""
    height, width = keep.shape
    removed = [(i, j) for i in range(height) for j in range(width) if not keep[i, j]]
    index = {pixel: k for k, pixel in enumerate(removed)}
    matrix, rhs = lil_matrix((len(removed), len(removed))), np.zeros((len(removed), image.shape[0]))
    for k, (i, j) in enumerate(removed):
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                a, b = i + di, j + dj
                if (di, dj) == (0, 0) or not (0 <= a < height and 0 <= b < width):
                    continue
                weight = direct if di == 0 or dj == 0 else diagonal
                matrix[k, k] += weight
                if keep[a, b]:
                    rhs[k] += weight * image[:, a, b]
                else:
                    matrix[k, index[a, b]] -= weight
    solution = spsolve(matrix.tocsc(), rhs).reshape(len(removed), -1)
    out = image.copy()
    for k, (i, j) in enumerate(removed):
        out[:, i, j] = solution[k]
    return out


def test_the_neighbour_sum_is_the_3x3_convolution_with_zero_padding():
    x = torch.randn(7, 1, 11, 9, generator=torch.Generator().manual_seed(3))
    kernel = torch.tensor([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0.0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]]).view(1, 1, 3, 3)
    torch.testing.assert_close(neighbour_sum(x), F.conv2d(x, kernel, padding=1), atol=1e-6, rtol=0)
    # The direct and diagonal weights swapped: the same check tells it apart.
    swapped = torch.tensor([[1 / 6, 1 / 12, 1 / 6], [1 / 12, 0.0, 1 / 12], [1 / 6, 1 / 12, 1 / 6]]).view(1, 1, 3, 3)
    assert (neighbour_sum(x) - F.conv2d(x, swapped, padding=1)).abs().max() > 0.05


def test_the_imputation_stays_float32_under_bf16_autocast(monkeypatch):
    # The curves' forward passes run under the run's autocast, and the imputation runs inside it.
    generator = torch.Generator().manual_seed(0)
    images, keep = torch.randn(20, 3, 32, 32, generator=generator), torch.rand(20, 32, 32, generator=generator) >= 0.8
    plain = impute(images, keep, noise=0.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = impute(images, keep, noise=0.0)
    assert under_autocast.dtype == torch.float32
    torch.testing.assert_close(under_autocast, plain, atol=1e-6, rtol=0)
    # Planted: the neighbour sum as a convolution, which autocast runs in bf16, fails the same check.
    from stress.analyses import faithfulness

    kernel = torch.tensor([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0.0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]]).view(1, 1, 3, 3)
    monkeypatch.setattr(faithfulness, "neighbour_sum", lambda x: F.conv2d(x, kernel, padding=1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        convolved = impute(images, keep, noise=0.0)
    assert (convolved - plain).abs().max() > 1e-3


@pytest.mark.parametrize("share_removed", [0.3, 0.9])
def test_imputation_solves_the_neighbour_mean_system(share_removed):
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(3, 3, 16, 16, generator=generator)
    keep = torch.rand(3, 16, 16, generator=generator) >= share_removed
    ours = impute(images, keep, noise=0.0).double().numpy()
    for k in range(3):
        expected = imputation_reference(images[k].double().numpy(), keep[k].numpy())
        np.testing.assert_allclose(ours[k], expected, atol=2e-3)
        # A planted wrong system (equal weights for all 8 neighbours) is told apart by the same check.
        wrong = imputation_reference(images[k].double().numpy(), keep[k].numpy(), direct=1 / 8, diagonal=1 / 8)
        assert np.abs(ours[k] - wrong).max() > 2e-2
    assert torch.equal(impute(images, keep, noise=0.0)[keep.unsqueeze(1).expand_as(images)], images[keep.unsqueeze(1).expand_as(images)])


def test_the_solve_drops_converged_rows_without_changing_any_row(monkeypatch):
    # Images with 5 % to 95 % of their pixels removed converge after very different numbers of iterations,
    # so the working batch shrinks. Every row must come out bit for bit as in the solve that keeps all rows.
    from stress.analyses import faithfulness

    generator = torch.Generator().manual_seed(4)
    images = torch.randn(12, 3, 16, 16, generator=generator)
    shares = torch.linspace(0.05, 0.95, 12).view(-1, 1, 1)
    keep = torch.rand(12, 16, 16, generator=generator) >= shares
    batch_rows = []
    plain_sum = faithfulness.neighbour_sum
    monkeypatch.setattr(faithfulness, "neighbour_sum", lambda x: batch_rows.append(x.shape[0]) or plain_sum(x))
    compacted = impute(images, keep, noise=0.0)
    assert batch_rows[-1] < 12 * 3 / 2  # it did drop rows: fewer than half of the 36 were left at the end
    monkeypatch.setattr(faithfulness, "COMPACT_BELOW", 0.0)
    batch_rows.clear()
    every_row = impute(images, keep, noise=0.0)
    assert set(batch_rows[1:]) == {36}  # the reference solve kept all rows to the end
    assert torch.equal(compacted, every_row)
    for k in (0, 5, 11):  # and against the sparse direct solve; image 0 converges first and leaves the batch early
        expected = imputation_reference(images[k].double().numpy(), keep[k].numpy())
        np.testing.assert_allclose(compacted[k].double().numpy(), expected, atol=2e-3)


def test_imputation_noise_touches_removed_pixels_only():
    images = torch.zeros(2, 3, 8, 8)
    keep = torch.zeros(2, 8, 8, dtype=torch.bool)
    keep[:, :4] = True
    filled = impute(images, keep, noise=0.5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(filled[:, :, :4], images[:, :, :4])
    assert filled[:, :, 4:].std() == pytest.approx(0.5, rel=0.2)  # the system's solution is 0 here: all noise


def test_structured_random_maps_are_upsampled_coarse_noise():
    maps = structured_random_maps(4, (8, 8), (32, 32), torch.Generator().manual_seed(0))
    assert maps.shape == (4, 32, 32)
    coarse = F.interpolate(maps[:, None], size=(8, 8), mode="area")[:, 0]
    # Smooth at the CAM's scale: neighbouring pixels differ far less than independent draws would.
    assert (maps[:, 1:] - maps[:, :-1]).abs().mean() < 0.1 and coarse.std() > 0.15


# -- planted cases: class evidence in a known region ---------------------------
EVIDENCE = (slice(2, 14), slice(2, 14))  # rows, cols of the square whose colour is the class
COLOURS = torch.tensor([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0], [1.0, 1.0, -1.0]])  # normalised units


def planted_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, len(COLOURS), (n,), generator=generator)
    images = torch.randn(n, 3, 32, 32, generator=generator) * 0.6  # texture everywhere, no class information
    images[:, :, EVIDENCE[0], EVIDENCE[1]] = COLOURS[labels][:, :, None, None] * 1.5 + 0.2 * torch.randn(n, 3, 12, 12, generator=generator)
    return images, labels


@pytest.fixture(scope="module")
def planted_model() -> SimpleCNN:
    torch.manual_seed(0)
    model = SimpleCNN(ModelConfig(widths=(8, 16, 32), hidden=32, num_classes=len(COLOURS)))
    images, labels = planted_data(800, seed=0)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(4):
        for start in range(0, len(images), 50):
            loss = F.cross_entropy(model(images[start:start + 50]), labels[start:start + 50])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    model.eval()
    return model


def road_summary(model, images, maps, targets) -> dict:
    generator = torch.Generator().manual_seed(3)
    random_maps = structured_random_maps(len(images), cam_resolution(model, images), (32, 32), generator)
    curves = road_curves(model, images, {"road": maps, "road_random": random_maps}, targets,
                         fractions=(0.1, 0.3, 0.5, 0.7, 0.9), generator=generator)
    return summarise_road({"faithful_indices": np.arange(len(images)),
                           **{f"faithful_{k}": v.numpy() for k, v in curves.items() if k.endswith("_auc")}})


@pytest.mark.slow
def test_planted_model_learns_the_evidence_square(planted_model):
    images, labels = planted_data(200, seed=1)
    with torch.no_grad():
        assert (planted_model(images).argmax(1) == labels).float().mean() > 0.95


@pytest.mark.slow
def test_gradcam_of_a_model_that_uses_the_square_passes(planted_model):
    images, _ = planted_data(80, seed=2)
    targets = planted_model(images).argmax(1)
    maps = gradcam(planted_model, images, targets)
    road = road_summary(planted_model, images, maps, targets)
    assert road_verdict(road) == EFFECT, road


@pytest.mark.slow
def test_a_map_pointing_away_from_the_evidence_fails(planted_model):
    images, _ = planted_data(80, seed=2)
    targets = planted_model(images).argmax(1)
    elsewhere = gradcam(planted_model, images, targets).flip(1, 2)  # the same blobs, at the opposite corner
    road = road_summary(planted_model, images, elsewhere, targets)
    assert road_verdict(road) == NO_EFFECT, road


@pytest.mark.slow
def test_maps_of_randomised_models_do_not_pass(planted_model):
    """A single randomised network's Grad-CAM can still follow image edges (Adebayo et al. 2018), so
    one draw may weakly beat random; over several randomisations (16 images each) it must not pass,
    and it stays far below the trained model's gain."""
    images, _ = planted_data(80, seed=2)
    targets = planted_model(images).argmax(1)
    maps = torch.cat([gradcam(randomized_copy(planted_model, torch.Generator().manual_seed(seed)), images[i:i + 16], targets[i:i + 16])
                      for seed, i in enumerate(range(0, 80, 16))])
    road = road_summary(planted_model, images, maps, targets)
    trained = road_summary(planted_model, images, gradcam(planted_model, images, targets), targets)
    assert road_verdict(road) != EFFECT, road
    assert road["combined_gain"]["mean"] < 0.2 * trained["combined_gain"]["mean"]
