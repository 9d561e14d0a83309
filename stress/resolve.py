"""A run's config with what the dataset and the model decide filled in, checked before anything is written.

From the dataset: class names, number of classes, image size, input channels, and (unless
given) the per-channel mean and standard deviation of the training split. From the model: it
is built once and run on a probe batch, which checks that it exists, takes the images and
gives one logit per class, and finds the Grad-CAM layer (unless `stress.cam_layer` names one).
The resolved config is what config.json records and what every stage key is computed from.
"""

from __future__ import annotations

from dataclasses import dataclass

from stress.config import ExperimentConfig, merge
from stress.constants import CIFAR10_MEAN, CIFAR10_STD
from stress.data import Splits, channel_stats
from stress.models import check_cam_layer, check_model, create_model, find_cam_layer, probe_batch


@dataclass(frozen=True)
class Resolution:
    """How the resolved values were chosen, for the manifest and the report."""

    config: ExperimentConfig
    input_stats: str  # "measured on the training split", "given", CIFAR-10's published constants, or recorded in checkpoints
    cam_layer: str  # "" when the model has no layer with a spatial output
    cam_layer_chosen: str  # "automatic" | "given"
    val_size_chosen: str = "given"  # "given" | "a tenth of the training images in use"

    def describe(self) -> dict:
        m = self.config.model
        return {
            "classes": len(self.config.data.class_names), "image_size": m.image_size,
            "val_size": {"value": self.config.data.val_size, "chosen": self.val_size_chosen},
            "input_stats": {"mean": list(m.mean), "std": list(m.std), "how": self.input_stats},
            "gradcam_layer": {"name": self.cam_layer or None, "chosen": self.cam_layer_chosen,
                              "skipped": None if self.cam_layer else GRADCAM_SKIPPED},
        }


# Measured statistics this close to CIFAR-10's published ones (every channel, mean and std) are
# taken to be CIFAR-10's, and the published constants are used. A re-encoded copy (the local one
# was decoded from JPEG: its standard deviations are about 0.002 lower) then trains exactly as
# torchvision's download does, and as runs from before the statistics were measured did.
PUBLISHED_TOLERANCE = 0.005


def published_cifar10(mean: tuple[float, ...], std: tuple[float, ...], classes: int) -> bool:
    """Whether measured statistics of a 10-class, 3-channel training split are CIFAR-10's, within PUBLISHED_TOLERANCE."""
    if classes != 10 or len(mean) != 3:
        return False
    measured, published = (*mean, *std), (*CIFAR10_MEAN, *CIFAR10_STD)
    return max(abs(a - b) for a, b in zip(measured, published)) <= PUBLISHED_TOLERANCE


GRADCAM_SKIPPED = ("no module of the model gives a spatial map (N, K, h, w) with h and w above 1 on a probe batch, "
                   "so Grad-CAM, its faithfulness checks and the case maps were skipped")


def resolve(config: ExperimentConfig, splits: Splits, stats_source: str = "given") -> Resolution:
    """`config` with the dataset's and the model's values filled in; StressError (one line) on any mismatch.

    stats_source: how statistics already in `config` were chosen ("given", or recorded in checkpoints)."""
    overrides: dict = {
        "data.class_names": list(splits.class_names),
        "model.num_classes": len(splits.class_names),
        "model.image_size": int(splits.train_x.shape[-1]),
        "model.in_channels": int(splits.train_x.shape[1]),
        "data.val_size": len(splits.val_indices),  # 0 (a tenth of the training images) becomes its number
    }
    how = stats_source
    if not config.model.mean:
        mean, std = channel_stats(splits.train_x)
        how = "measured on the training split"
        if published_cifar10(mean, std, len(splits.class_names)):
            how = (f"CIFAR-10's published constants; measured on the training split: mean {', '.join(f'{m:.4f}' for m in mean)}, "
                   f"std {', '.join(f'{s:.4f}' for s in std)}, within {PUBLISHED_TOLERANCE}")
            mean, std = CIFAR10_MEAN, CIFAR10_STD
        overrides.update({"model.mean": list(mean), "model.std": list(std)})
    resolved = merge(config, overrides)
    model = create_model(resolved.model)
    check_model(model, resolved.model)
    probe = probe_batch(resolved.model)
    if config.stress.cam_layer:
        check_cam_layer(model, probe, config.stress.cam_layer)
        layer, chosen = config.stress.cam_layer, "given"
    else:
        layer, chosen = find_cam_layer(model, probe) or "", "automatic"
    val_chosen = "given" if config.data.val_size else "a tenth of the training images in use"
    return Resolution(merge(resolved, {"stress.cam_layer": layer}), how, layer, chosen, val_chosen)
