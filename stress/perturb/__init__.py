"""Test-time perturbations, uint8 (N, 3, H, W) -> uint8, batched on the images' device.

corruptions.py: the CIFAR-10-C corruptions (draws and transforms); tables.py: their severity
tables; kernels.py: the filters, resizes and samplers they are built from; shifts.py: the
geometric shifts (translations, rotations, scales, flips).
"""
