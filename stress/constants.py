"""Names and numbers that more than one stage uses, written once.

Class names, variants and the corruption list; the thresholds the analyses and the report
share; the default GPU shares of the driver. Severity tables live in stress.perturb.tables,
figure file names in stress.report.figures.
"""

from __future__ import annotations

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")  # by label
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)  # per-channel statistics of CIFAR-10's official training pixels, in [0, 1]
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CLASSES = CIFAR10_CLASSES
VARIANTS = ("baseline", "augmented")  # the two trainings: without and with RandomCrop + RandomHorizontalFlip

CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
    "zoom_blur", "snow", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
    "jpeg_compression", "speckle_noise", "gaussian_blur", "saturate",
)
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
# CIFAR-10-C's 15 main corruptions, whose mean RobustBench reports (the other four are the
# "extra" set). Frost is not implemented, so means over this list use 14 of them.
CIFAR10_C_MAIN: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)

CONFIDENT = 0.9  # confidence at or above which a prediction counts as "confident"
UNIFORM_CENTRE_SHARE = 0.25  # the central (H/2, W/2) window's share of the image area: what uniform attention gives

DEFAULT_TASK_GPUS = 0.25  # GPU fraction per fan-out task when the cluster has GPUs and --task-gpus is -1
DEFAULT_WORKER_GPUS = 1.0  # GPUs per training worker when the cluster has GPUs and --gpus-per-worker is -1

# A custom resource that marks nodes that are not spot instances (the head in cluster.yaml). Where a
# cluster has it, the trainers' tasks (and so their Train controllers) and sweep trial drivers ask for
# a sliver of it, so that a spot reclaim never takes down what coordinates the run.
NON_SPOT_RESOURCE = "non_spot"
