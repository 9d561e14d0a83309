"""Datasets: sources (synthetic, torchvision downloads, .npz, batches and image folders), checks, split, statistics."""

from stress.data.dataset import Dataset, Splits, channel_stats, check_arrays, fingerprint, load_dataset, resize_images, split_dataset
from stress.data.download import DOWNLOADS, default_cache_dir, download_named, download_torchvision
from stress.data.files import BatchUnpickler, load_batches_folder, load_image_folder, load_npz
from stress.data.synthetic import make_synthetic, synthetic_class_names

__all__ = ["DOWNLOADS", "BatchUnpickler", "Dataset", "Splits", "channel_stats", "check_arrays",
           "default_cache_dir", "download_named", "download_torchvision", "fingerprint", "load_batches_folder",
           "load_dataset", "load_image_folder", "load_npz", "make_synthetic", "resize_images", "split_dataset",
           "synthetic_class_names"]
