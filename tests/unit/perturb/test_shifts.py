"""Shifts against independent references: numpy slicing, torch.flip and torchvision per image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from stress.errors import StressError
from stress.perturb.shifts import apply_shift, list_shifts, shift_family


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8, generator=generator)  # (N, 3, H, W)


def translate_reference(images: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Pixel loop: out[y, x] = in[y - dy, x - dx] where that source pixel exists, else 0."""
    out = np.zeros_like(images)
    height, width = images.shape[2:]
    for y in range(height):
        for x in range(width):
            if 0 <= y - dy < height and 0 <= x - dx < width:
                out[:, :, y, x] = images[:, :, y - dy, x - dx]
    return out


def translate_edge_reference(images: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Pixel loop: out[y, x] = in[y - dy, x - dx], with the source clamped to the nearest border pixel."""
    out = np.zeros_like(images)
    height, width = images.shape[2:]
    for y in range(height):
        for x in range(width):
            out[:, :, y, x] = images[:, :, min(max(y - dy, 0), height - 1), min(max(x - dx, 0), width - 1)]
    return out


def warp_edge_reference(images: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """Pixel loop: bilinear sampling at inverse @ (offset from the centre), source coordinates
    clamped into the image (replicated border); pixel centres at integer + 0.5."""
    n, c, height, width = images.shape
    out = np.zeros(images.shape, dtype=np.float64)
    for y in range(height):
        for x in range(width):
            u, v = inverse @ np.array([x + 0.5 - width / 2, y + 0.5 - height / 2])
            sx = min(max(u + width / 2 - 0.5, 0.0), width - 1.0)
            sy = min(max(v + height / 2 - 0.5, 0.0), height - 1.0)
            x0, y0 = int(np.floor(sx)), int(np.floor(sy))
            x1, y1 = min(x0 + 1, width - 1), min(y0 + 1, height - 1)
            ax, ay = sx - x0, sy - y0
            out[:, :, y, x] = ((1 - ay) * ((1 - ax) * images[:, :, y0, x0] + ax * images[:, :, y0, x1])
                               + ay * ((1 - ax) * images[:, :, y1, x0] + ax * images[:, :, y1, x1]))
    return np.round(out)


def test_list_shifts_default_grid():
    names = list_shifts()
    translations = [name for name in names if name.startswith("translate_")]
    assert len(translations) == 25  # offsets -4, -2, 0, 2, 4 in x and y
    assert {"translate_0_0", "translate_-4_4", "translate_4_-2"} <= set(translations)
    assert names[25:50] == [f"zerofill_{name}" for name in translations]  # the same grid, black borders
    assert names[50:] == [
        "hflip",
        "rotate_-15", "rotate_-10", "rotate_-5", "rotate_5", "rotate_10", "rotate_15",
        "scale_0.8", "scale_0.9", "scale_1.1", "scale_1.2",
    ]  # fmt: skip
    assert len(set(names)) == len(names)
    assert len(list_shifts(translation_step=1, max_translation=1)) == 2 * 9 + 11


def test_shift_family():
    assert shift_family("translate_-2_4") == "translation"
    assert shift_family("hflip") == "flip"
    assert shift_family("rotate_-15") == "rotation"
    assert shift_family("scale_0.8") == "scale"
    assert shift_family("zerofill_translate_-2_4") == "translation_zerofill"
    assert shift_family("zerofill_rotate_5") == "rotation_zerofill"
    assert {shift_family(name) for name in list_shifts()} == {"translation", "translation_zerofill", "flip", "rotation", "scale"}


@pytest.mark.parametrize("name", ["blur", "translate_1", "translate_a_b", "rotate_x", "scale_0", "scale_-1", "hflips",
                                  "zerofill_hflip", "zerofill_zerofill_translate_1_1", "zerofill_"])
def test_unknown_shift_lists_valid_forms(images, name):
    with pytest.raises(StressError, match="valid forms: translate_<dx>_<dy>"):
        apply_shift(images, name)
    with pytest.raises(StressError):
        shift_family(name)


def test_rejects_non_uint8(images):
    with pytest.raises(StressError, match="uint8"):
        apply_shift(images.float(), "hflip")


@pytest.mark.parametrize("dx, dy", [(2, 0), (0, -4), (-4, 2), (3, 3), (-1, -5), (40, 0)])
def test_translation_matches_slicing_reference(images, dx, dy):
    out = apply_shift(images, f"zerofill_translate_{dx}_{dy}")
    assert out.dtype == torch.uint8 and out.shape == images.shape
    np.testing.assert_array_equal(out.numpy(), translate_reference(images.numpy(), dx, dy))
    edge = apply_shift(images, f"translate_{dx}_{dy}")
    np.testing.assert_array_equal(edge.numpy(), translate_edge_reference(images.numpy(), dx, dy))
    if dx or dy:  # the two fills differ exactly on the uncovered pixels
        assert not torch.equal(edge, out)


def test_translation_equals_crop_of_zero_padded_image(images):
    # The augmentation's crop at offset (top, left) of a 4-padded image is translate by (4 - left, 4 - top).
    padded = np.pad(images.numpy(), ((0, 0), (0, 0), (4, 4), (4, 4)))
    top, left = 1, 6
    crop = padded[:, :, top : top + 32, left : left + 32]
    np.testing.assert_array_equal(apply_shift(images, f"zerofill_translate_{4 - left}_{4 - top}").numpy(), crop)


def test_edge_fill_leaves_no_black_border():
    white = torch.full((1, 3, 32, 32), 200, dtype=torch.uint8)
    for name in ["translate_4_-4", "rotate_15", "scale_0.8"]:
        assert apply_shift(white, name).min() >= 199, name  # border replicated, never black
        assert apply_shift(white, f"zerofill_{name}").min() == 0, name


@pytest.mark.parametrize("name, inverse", [
    ("rotate_10", np.array([[np.cos(np.radians(10)), -np.sin(np.radians(10))], [np.sin(np.radians(10)), np.cos(np.radians(10))]])),
    ("scale_0.8", np.eye(2) / 0.8),
    ("scale_1.2", np.eye(2) / 1.2),
])
def test_edge_filled_warps_match_a_clamped_bilinear_loop(images, name, inverse):
    out = apply_shift(images, name).int().numpy()
    difference = np.abs(out - warp_edge_reference(images.numpy().astype(np.float64), inverse))
    assert difference.max() <= MAX_GREY_DIFF and (difference > 0).mean() <= MAX_SHARE_DIFFERENT


def test_hflip_matches_torch_flip(images):
    np.testing.assert_array_equal(apply_shift(images, "hflip").numpy(), torch.flip(images, dims=[3]).numpy())


@pytest.mark.parametrize("name", ["translate_0_0", "rotate_0", "scale_1.0", "scale_1", "zerofill_translate_0_0"])
def test_identity_shifts_return_input_exactly(images, name):
    out = apply_shift(images, name)
    assert torch.equal(out, images)
    assert out.data_ptr() != images.data_ptr()  # a copy: callers may modify it


# Tolerance for rotation/scale vs torchvision: both resample with bilinear weights at the same
# pixel centres (align_corners=False) and round to uint8, but the sampling grids come from
# different float32 arithmetic, so a value lying near .5 can round the other way. That costs
# at most 1 grey level, on a small share of pixels.
MAX_GREY_DIFF = 1
MAX_SHARE_DIFFERENT = 0.02


def assert_close_to(out: torch.Tensor, reference: torch.Tensor) -> None:
    difference = (out.int() - reference.int()).abs()
    assert difference.max().item() <= MAX_GREY_DIFF
    assert (difference > 0).float().mean().item() <= MAX_SHARE_DIFFERENT


@pytest.mark.parametrize("degrees", [-15, -5, 10, 15])
def test_rotation_matches_torchvision(images, degrees):
    out = apply_shift(images, f"zerofill_rotate_{degrees}")
    assert out.dtype == torch.uint8 and out.shape == images.shape
    # fill=None is torchvision's plain zero padding in grid_sample (outside pixels are black).
    reference = torch.stack([TF.rotate(image, degrees, interpolation=InterpolationMode.BILINEAR) for image in images])
    assert_close_to(out, reference)
    assert not torch.equal(out, images)


def test_rotation_interior_matches_torchvision_fill_zero(images):
    # With an explicit fill=0 torchvision additionally blends border pixels with a coverage
    # mask (attenuating them twice); pixels whose whole bilinear footprint is inside the image
    # are unaffected, so compare there. A white image rotated by us marks those pixels.
    out = apply_shift(images, "zerofill_rotate_10")
    reference = torch.stack([TF.rotate(image, 10, interpolation=InterpolationMode.BILINEAR, fill=0) for image in images])
    inside = apply_shift(torch.full_like(images, 255), "zerofill_rotate_10") == 255
    assert inside.float().mean() > 0.8
    assert (out.int() - reference.int()).abs()[inside].max().item() <= MAX_GREY_DIFF


def test_rotation_direction_is_counter_clockwise():
    # A bright dot right of centre moves up (towards smaller y) under a +90 degree turn.
    image = torch.zeros(1, 3, 9, 9, dtype=torch.uint8)
    image[..., 4, 7] = 200
    out = apply_shift(image, "zerofill_rotate_90")
    assert out[0, 0, 1, 4] == 200 and out.sum() == 3 * 200


@pytest.mark.parametrize("factor", [0.8, 0.9, 1.1, 1.2])
def test_scale_matches_torchvision_affine(images, factor):
    out = apply_shift(images, f"zerofill_scale_{factor}")
    reference = torch.stack(
        [
            TF.affine(image, angle=0.0, translate=[0, 0], scale=factor, shear=[0.0, 0.0],
                      interpolation=InterpolationMode.BILINEAR)
            for image in images
        ]
    )  # fmt: skip
    assert_close_to(out, reference)


def test_scale_below_one_zero_fills_border(images):
    out = apply_shift(images, "zerofill_scale_0.8")
    # Content shrinks to the central 25.6 pixels, so the outer two rows/columns are black.
    assert out[:, :, :2, :].sum() == 0 and out[:, :, :, -2:].sum() == 0
    assert out[:, :, 8:24, 8:24].float().mean() > 50


def test_shapes_preserved_for_non_square_batch():
    images = torch.randint(0, 256, (2, 3, 12, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    for name in ["translate_2_-2", "hflip", "rotate_5", "scale_1.2"]:
        assert apply_shift(images, name).shape == images.shape
    reference = torch.stack([TF.rotate(image, 15, interpolation=InterpolationMode.BILINEAR) for image in images])
    assert_close_to(apply_shift(images, "zerofill_rotate_15"), reference)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_stays_on_device(images):
    for name in ["translate_2_2", "hflip", "rotate_5", "scale_0.9"]:
        out = apply_shift(images.cuda(), name)
        assert out.is_cuda and out.dtype == torch.uint8
        assert_close_to(out.cpu(), apply_shift(images, name))
