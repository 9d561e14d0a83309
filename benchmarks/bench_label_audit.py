"""Cost of the label audit and the failure slices against the evaluate stage's own work, on a real run folder.

    .venv/bin/python benchmarks/bench_label_audit.py --run runs/simple_cnn --out benchmarks/results/label_audit.json

Reference: `evaluate_shard` over the test set for every model of the run, with the run's options
(predictions, Grad-CAM statistics for two targets, faithfulness curves on every k-th image): the
work the evaluate stage fans out. Subject: what this feature adds, for every model:
`audit_labels` on the logits (cleanlab), `embed_shard` (penultimate-layer embeddings), the hue
of each image, the candidate slices, k-means, the slice tests and the PCA projection.
Both run in this process on one torch thread, interleaved; the figure is subject / reference
CPU seconds per round, median over rounds (target: below 0.10).
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import common  # noqa: E402  (puts the repo on sys.path)
import torch  # noqa: E402

from stress.analyses.failures import image_characteristics  # noqa: E402
from stress.analyses.labels import audit_labels  # noqa: E402
from stress.analyses.slices import candidate_slices, cluster_embeddings, find_slices, mean_hue, project  # noqa: E402
from stress.artifacts import load_torch, read_json  # noqa: E402
from stress.config import ExperimentConfig, model_names  # noqa: E402
from stress.data import load_dataset, split_dataset  # noqa: E402
from stress.evaluate.shards import embed_shard, evaluate_shard  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=str(common.REPO / "runs" / "simple_cnn"), help="a finished run folder [runs/simple_cnn]")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", help="write the result as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    run = pathlib.Path(args.run)
    config = ExperimentConfig.from_dict(read_json(run / "config.json"))
    splits = split_dataset(load_dataset(config.data), config.data, config.train.seed)
    images, labels = splits.test_x, splits.test_y
    names, model_config = model_names(config), config.to_dict()["model"]
    weights = {v: load_torch(run / "variants" / v / "model.pt")["model"] for v in names}
    n, s = len(labels), config.stress
    options = {"gradcam": bool(s.cam_layer), "cam_layer": s.cam_layer or None, "faithfulness_every": max(1, n // s.faithfulness_images),
               "faithfulness_steps": s.faithfulness_steps, "seed": config.train.seed, "precision": config.train.precision}
    logits = {}

    def evaluate() -> None:
        for v in names:
            logits[v] = evaluate_shard(weights[v], model_config, images, labels, 0, n, **options)["logits"]

    characteristics = image_characteristics(images)

    def audit_and_slices() -> None:
        _, flags, _ = audit_labels(labels, logits, config.data.class_names, names)
        hues = mean_hue(images)
        for v in names:
            embedding = embed_shard(weights[v], model_config, images, 0, n, precision=config.train.precision)["embedding"]
            clusters = cluster_embeddings(embedding, config.train.seed, min_size=s.slice_min_size)
            predicted = logits[v].argmax(1)
            find_slices(predicted == labels, candidate_slices(labels, config.data.class_names, characteristics, hues, clusters),
                        labels, predicted, config.data.class_names, min_size=s.slice_min_size)
            project(embedding, config.train.seed)

    evaluate()  # the subject needs the logits; also warms both paths up
    samples = common.interleave({"evaluate": evaluate, "audit_and_slices": audit_and_slices}, args.rounds, warmup=False, log=print)
    ratios = common.round_ratios(samples, "audit_and_slices", "evaluate", "cpu", higher_is_better=False)
    result = {"machine": common.machine_info(), "run": str(run), "images": n, "models": list(names),
              "samples": samples, "ratio_cpu": common.summarise_ratio(ratios), "target": "below 0.10"}
    print(f"{common.cpu_model()}: audit + slices / evaluate work (CPU seconds, one thread, {n} images, {len(names)} models): "
          f"{result['ratio_cpu']['median']:.3f} (rounds: {', '.join(f'{r:.3f}' for r in ratios)})")
    if args.out:
        common.write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
