"""Merged per-image arrays -> findings, with their intervals. No files, no Ray.

One module per analysis: failures, explanations (Grad-CAM findings), gradcam and faithfulness
(the methods), robustness, calibration, seeds (statistics across a sweep's seeds), stats (the
interval and test routines they share).
"""
