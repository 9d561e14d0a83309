"""Prediction-level fidelity of bf16 against fp32 on a run's trained weights (run by hand).

    .venv/bin/python benchmarks/fidelity_precision.py runs/default --data ../shared/data/cifar10/cifar10.npz \
        --out benchmarks/results/fidelity.json

For each variant of the run folder, the same weights evaluate the test set in fp32 and under
bf16 autocast (`stress.evaluate.predict.predict_logits`), and then the first --stress-images test
images under every corruption at severity 3 (the same corrupted images for both precisions).
Then the evaluate stage's faithfulness measures (`stress.evaluate.shards.evaluate_shard`) on every
k-th test image, k = test images // the run's faithfulness_images (as the run chose them): deletion
and insertion AUCs of the Grad-CAM map against i.i.d. random order, and ROAD's most- and
least-relevant-first AUCs of the map and of the structure-matched random order. Each precision
explains its own prediction, as a run in that precision does.
Reported: top-1 agreement, the largest change of any softmax probability, and each metric
(accuracy, ECE with 15 bins, mean corruption accuracy, the faithfulness AUCs) in both precisions,
with the difference as a fraction of the metric's own 95% interval over test images (half-width, of
the fp32 side).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import common
import numpy as np
import torch

from stress.analyses.calibration import expected_calibration_error_from_confidences
from stress.analyses.stats import bootstrap_ci, wilson_interval
from stress.artifacts import load_torch
from stress.constants import CORRUPTIONS, VARIANTS
from stress.evaluate.predict import predict_logits
from stress.evaluate.shards import FAITHFUL_KEYS, evaluate_shard, load_model
from stress.perturb.corruptions import corrupt


def metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    probabilities = logits.softmax(1)
    confidence, predicted = probabilities.max(1)
    correct = (predicted == labels).numpy()
    return {"probabilities": probabilities, "predicted": predicted, "correct": correct, "confidence": confidence.numpy()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a finished run folder (variants/*/model.pt, config.json)")
    parser.add_argument("--data", help="the run's data source, if it moved (default: the one in config.json)")
    parser.add_argument("--stress-images", type=int, default=1000)
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    run = Path(args.run)
    config, splits = common.load_run(run, args.data)
    images, labels = torch.from_numpy(splits.test_x), torch.from_numpy(splits.test_y)
    n = min(args.stress_images, len(labels))
    stats = (config.model.mean, config.model.std)  # the run's input statistics (CIFAR-10's, or measured on its data)
    out: dict = {"machine": common.machine_info(), "run": str(run), "variants": {}}
    for v in VARIANTS:
        state = load_torch(run / "variants" / v / "model.pt")["model"]
        model = load_model(state, config.to_dict()["model"], torch.device("cpu"))
        result = {p: metrics(predict_logits(model, images, 500, p, stats=stats), labels) for p in ("fp32", "bf16")}
        a, b = result["fp32"], result["bf16"]
        accuracy = {p: float(r["correct"].mean()) for p, r in result.items()}
        low, high = wilson_interval(int(a["correct"].sum()), len(labels))
        ece = {p: expected_calibration_error_from_confidences(r["confidence"], r["correct"], 15) for p, r in result.items()}
        table = np.stack([a["confidence"], a["correct"]], axis=1)
        ece_low, ece_high = bootstrap_ci(lambda t: expected_calibration_error_from_confidences(t[:, 0], t[:, 1], 15), table, n_boot=300)
        corrupted = {p: [] for p in ("fp32", "bf16")}
        for name in CORRUPTIONS:
            x = corrupt(images[:n], name, 3, seed=7)
            for p in corrupted:
                corrupted[p].append((predict_logits(model, x, 500, p, stats=stats).argmax(1) == labels[:n]).numpy())
        per_image = {p: np.mean(np.stack(c), axis=0) for p, c in corrupted.items()}
        corr_half = 1.96 * per_image["fp32"].std(ddof=1) / np.sqrt(n)
        every = max(1, len(labels) // config.stress.faithfulness_images)
        faithful = {p: evaluate_shard(state, config.to_dict()["model"], splits.test_x, splits.test_y, 0, len(labels), gradcam=False,
                                      faithfulness_every=every, faithfulness_steps=config.stress.faithfulness_steps, seed=config.train.seed,
                                      precision=p, cam_layer=config.stress.cam_layer or None) for p in ("fp32", "bf16")}
        faithfulness = {}
        for key in FAITHFUL_KEYS:
            values = {p: faithful[p][f"faithful_{key}"] for p in faithful}
            half = 1.96 * values["fp32"].std(ddof=1) / np.sqrt(len(values["fp32"]))
            faithfulness[key] = {**{p: float(x.mean()) for p, x in values.items()},
                                 "difference_over_half_width": float((values["bf16"].mean() - values["fp32"].mean()) / half),
                                 "images": len(values["fp32"])}
        out["variants"][v] = {
            "faithfulness": faithfulness,
            "top1_agreement": float((a["predicted"] == b["predicted"]).float().mean()),
            "max_probability_change": float((a["probabilities"] - b["probabilities"]).abs().max()),
            "accuracy": accuracy, "accuracy_difference_over_half_width": (accuracy["bf16"] - accuracy["fp32"]) / ((high - low) / 2),
            "ece": ece, "ece_difference_over_half_width": (ece["bf16"] - ece["fp32"]) / ((ece_high - ece_low) / 2),
            "mean_corruption_acc_severity_3": {p: float(x.mean()) for p, x in per_image.items()},
            "mean_corruption_difference_over_half_width": float((per_image["bf16"].mean() - per_image["fp32"].mean()) / corr_half),
            "test_images": len(labels), "stress_images": n,
        }
        r = out["variants"][v]
        print(f"[{v}] agreement {r['top1_agreement']:.4f}, max |dp| {r['max_probability_change']:.4f}; accuracy "
              f"{accuracy['fp32']:.4f} / {accuracy['bf16']:.4f} ({r['accuracy_difference_over_half_width']:+.2f} of its half-width); "
              f"ECE {ece['fp32']:.4f} / {ece['bf16']:.4f} ({r['ece_difference_over_half_width']:+.2f}); mean corruption acc (sev 3) "
              f"{r['mean_corruption_acc_severity_3']['fp32']:.4f} / {r['mean_corruption_acc_severity_3']['bf16']:.4f} "
              f"({r['mean_corruption_difference_over_half_width']:+.2f})")
        print(f"[{v}] faithfulness on {faithfulness['deletion_auc']['images']} images, fp32 / bf16 (difference over half-width): " +
              "; ".join(f"{k} {x['fp32']:.4f} / {x['bf16']:.4f} ({x['difference_over_half_width']:+.2f})" for k, x in faithfulness.items()))
    if args.out:
        common.write_json(args.out, out)


if __name__ == "__main__":
    sys.exit(main())
