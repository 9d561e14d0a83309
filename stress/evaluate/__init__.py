"""Task bodies over one shard of the test set, plain PyTorch: the same as a Ray task or an in-process call.

predict.py: batched inference; shards.py: `evaluate_shard` (predictions, Grad-CAM statistics,
faithfulness) and `stress_shard` (both models on perturbed images).
"""
