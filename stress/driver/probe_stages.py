"""The texture and attack stages: texture-versus-shape probes and adversarial robustness, fanned out over test shards.

texture  every probe of stress.perturb.texture (patch shuffling, low / high-pass) on the same
         `stress.texture_images` test images for all models -> eval/texture.json, eval/texture.npz
attack   PGD (L-inf 1, 2, 4, 8/255; L2 0.25, 0.5) and AutoAttack (standard, L-inf 8/255) on
         `stress.adversarial_images` test images, each model attacked on its own from the same
         random starts -> eval/adversarial.json, eval/adversarial.npz, and eval/adversarial_cases.npz
         (a few images that flip first in both models, with both models' Grad-CAM, for the report)

Both read the evaluate stage's predictions.npz for clean correctness, save their tasks for
resumption (eval/texture_shards/, eval/attack_shards/), and are skipped by --skip-stress or an
image count of 0.
"""

from __future__ import annotations

import math
import time

import numpy as np

from stress.artifacts import RunFolder, config_key, write_json, write_npz
from stress.config import ExperimentConfig, model_names
from stress.data import Splits
from stress.driver.fanout import Executor, Task, run_resumable, shard_bounds, shard_key, used_precision
from stress.driver.stages import TRAINING_SECTIONS, StageOutcome, load_weights
from stress.errors import StressError
from stress.precision import resolve_precision
from stress.report.statements import interval_text, number, signed

TEXTURE_VERSION = 2  # the stage's summary; the saved tasks have their own version, so a new summary reuses them
# (2: Newcombe's paired intervals and McNemar's exact test for the probes' accuracy differences)
TEXTURE_SHARD_VERSION = 1
TEXTURE_OPTIONS = ("texture_images",)
ATTACK_VERSION = 8  # 3: Grad-CAM similarity over correctly classified images only; 4: Newcombe's paired intervals, McNemar;
# 5: the attacks run in the run's precision (float32 before); 6: the adversarial image's Grad-CAM of the clean class too;
# 7: the cases hold that map too; 8: the share of the drop that is the change of class, with Fieller's interval
ATTACK_SHARD_VERSION = 4  # 3: each shard says the precision it resolved to; 4: cam_same_class
ATTACK_OPTIONS = ("adversarial_images", "pgd_steps", "autoattack", "cam_layer")
IMAGES_PER_ATTACK_TASK = 100  # a task per 100 images: progress lines every few minutes on a CPU
CASES = 4
AUTOATTACK_INSTALL = "pip install --no-deps torchattacks==3.5.1"
AUTOATTACK_MIN_CLASSES = 4


def attack_task_count(images: int, slots: int, on_gpus: bool) -> int:
    """Tasks for the attack stage: on CPUs at least one per IMAGES_PER_ATTACK_TASK images (each takes
    minutes), on GPUs one per slot (--shards or the free GPU fractions), so all run in one wave: a GPU
    task's time barely grows with its batch, which a few hundred images leave mostly idle."""
    if on_gpus:
        return max(1, min(slots, images))
    return max(slots, math.ceil(images / IMAGES_PER_ATTACK_TASK))


def subset(n_test: int, count: int, seed: int, stream: int) -> np.ndarray:
    """`count` test indices drawn without replacement by the run seed (all of them when count >= n_test), in index order."""
    if count >= n_test:
        return np.arange(n_test)
    rng = np.random.default_rng([seed, stream])
    return np.sort(rng.choice(n_test, size=count, replace=False))


def _pending(run: RunFolder, config: ExperimentConfig, stage: str, count: int, flag: str, options: tuple[str, ...], version: int,
             log) -> tuple[str, str] | None:
    """(stage key, weights digest) when the stage has work to do; None (and a log line) when it is off or already finished."""
    if config.stress.skip_stress or count == 0:
        log(f"{stage}: skipped ({'--skip-stress' if config.stress.skip_stress else f'{flag} 0'})")
        return None
    key = config_key(config.to_dict(), TRAINING_SECTIONS, {"stress": options}, version)
    weights_id = run.weights_digest(model_names(config))
    if run.stage_done(stage, key, weights_id):
        log(f"{stage}: already finished: skipped")
        return None
    return key, weights_id


def _clean(run: RunFolder, names, chosen: np.ndarray) -> dict[str, np.ndarray]:
    with np.load(run.path("eval", "predictions.npz")) as predictions:
        return {v: predictions[f"{v}_correct"][chosen].astype(bool) for v in names}


def texture_stage(run: RunFolder, config: ExperimentConfig, splits: Splits, executor: Executor, log) -> StageOutcome:
    """Accuracy of every model under patch shuffling and low / high-pass filtering; the texture-reliance index."""
    from stress.analyses.texture import headline_index, summarise_texture
    from stress.evaluate.probe_shards import texture_shard
    from stress.perturb.texture import probes

    s = config.stress
    pending = _pending(run, config, "texture", s.texture_images, "--texture-images", TEXTURE_OPTIONS, TEXTURE_VERSION, log)
    if pending is None:
        return StageOutcome("texture", ran=False)
    (key, weights_id), names = pending, model_names(config)
    started = time.perf_counter()
    chosen = subset(len(splits.test_y), s.texture_images, config.train.seed, 0x7E)
    images, labels = splits.test_x[chosen], splits.test_y[chosen]
    names_of_probes = probes(*images.shape[-2:])
    model_config = config.to_dict()["model"]
    weights_ref = executor.put(load_weights(run, model_config, names))
    images_ref, labels_ref = executor.put(images), executor.put(labels)
    bounds = shard_bounds(len(chosen), s.shards or executor.slots(config.resources))
    options = {"seed": config.train.seed, "precision": config.train.precision}
    tasks = [Task(f"t_{a}_{b}", (weights_ref, model_config, images_ref, labels_ref, a, b, names_of_probes), options, f"texture:{a}-{b}")
             for a, b in bounds]
    log(f"texture: {len(names_of_probes)} probes ({', '.join(names_of_probes)}) x {len(chosen)} test images x {len(names)} model(s), "
        f"in {len(tasks)} tasks")
    tasks_key = config_key(config.to_dict(), TRAINING_SECTIONS, {"stress": TEXTURE_OPTIONS}, TEXTURE_SHARD_VERSION)
    results = run_resumable(executor, texture_shard, tasks, run.path("eval", "texture_shards"), shard_key(run, tasks_key), config.resources, log)
    precision = used_precision(list(results.values()), "texture", config.train.precision, log)
    probed = {v: {p: np.concatenate([results[t.name][f"{v}|{p}"] for t in tasks]) for p in names_of_probes} for v in names}
    record = summarise_texture(_clean(run, names, chosen), probed, names, len(splits.class_names), config.train.seed)
    record["precision"] = precision
    record["seconds"] = time.perf_counter() - started
    write_npz(run.path("eval", "texture.npz"), indices=chosen, **{f"{v}|{p}": probed[v][p] for v in names for p in names_of_probes})
    write_json(run.path("eval", "texture.json"), record)
    for v in names:
        m, head = record["models"][v], headline_index(record, v)
        kept = ", ".join(f"{p} {number(m['accuracy'][p]['acc'], 3)}" for p in names_of_probes)
        index = (f"; texture-reliance index (grid {head['grid']}, cut-off {head['cutoff']:g}) {number(head['index'], 2)} "
                 f"{interval_text(head['low'], head['high'], 2, sign=False)}" if head and head["index"] is not None else "")
        log(f"[{v}] texture probes: clean {number(m['clean']['acc'], 3)}; {kept}{index}")
    for other, d in record.get("differences", {}).items():
        parts = [f"grid {e['grid']} {signed(e['difference'], 2)} {interval_text(e['low'], e['high'], 2)}" + ("*" if e["significant"] else "")
                 for e in d["index"] if e["difference"] is not None]
        if parts:
            log(f"texture: {other} - {d['reference']} texture-reliance index: {', '.join(parts)} "
                f"(unadjusted 95% bootstrap over {len(chosen)} images; * significant after Holm over {len(parts)} scales)")
    run.mark_done("texture", record["seconds"], key, weights=weights_id, tasks=len(tasks), precision=precision)
    return StageOutcome("texture", ran=True, seconds=record["seconds"])


def _autoattack_available() -> bool:
    try:
        import torchattacks  # noqa: F401
    except ImportError:
        return False
    return True


def check_autoattack(config: ExperimentConfig) -> None:
    """A run whose attack stage will run AutoAttack needs torchattacks: say so before anything is trained or written."""
    s = config.stress
    if s.autoattack and s.adversarial_images > 0 and not s.skip_stress and not _autoattack_available():
        raise StressError(f"AutoAttack needs torchattacks, which is not installed: {AUTOATTACK_INSTALL} (or pass --no-autoattack)")


def expected_precision(requested: str, on_gpus: bool) -> str:
    """What `requested` resolves to on the attack tasks' devices, as far as the driver can tell: "auto" on GPU tasks
    from a driver without a GPU is only known once the tasks have run (each reports what it used)."""
    import torch

    if on_gpus and requested == "auto" and not torch.cuda.is_available():
        return "auto (bf16 where the GPU supports it)"
    return resolve_precision(requested, "cuda" if on_gpus else "cpu")


def attack_cases(weights: dict, model_config: dict, images: np.ndarray, labels: np.ndarray, indices: np.ndarray,
                 flips: dict[str, np.ndarray], seed: int, steps: int, cam_layer: str | None,
                 precision: str = "fp32") -> dict[str, np.ndarray]:
    """Each model's adversarial image at its flip eps for the given images (recomputed from the same random starts, in the
    attacks' `precision`), with the Grad-CAM of the clean and of the adversarial prediction: the arrays of
    eval/adversarial_cases.npz."""
    import torch

    from stress.augment import input_stats
    from stress.evaluate.probe_shards import PixelModel, _cams, starts, under_precision
    from stress.evaluate.shards import load_model
    from stress.perturb.pgd import ATTACKS, pgd

    linf = sorted((a for a in ATTACKS if a.norm == "linf"), key=lambda a: a.eps)
    stats = input_stats(model_config)
    out: dict[str, np.ndarray] = {"indices": indices, "images": images, "labels": labels}
    for v, state in weights.items():
        model = load_model(state, model_config, torch.device("cpu"))
        forward = PixelModel(under_precision(model, precision, torch.device("cpu")), stats, scale=1.0)
        adversarial, eps = [], []
        for i, index in enumerate(indices):
            attack = linf[int(flips[v][i])]
            x, y = torch.tensor(images[i : i + 1]), torch.tensor(labels[i : i + 1])
            start = starts(tuple(x.shape), "linf", attack.eps, seed, attack.name, int(index))
            adversarial.append(pgd(forward, x, y, "linf", attack.eps, steps, start=start).adversarial)
            eps.append(attack.eps)
        adversarial = torch.cat(adversarial)
        cam_clean, predicted_clean = _cams(model, torch.tensor(images).float(), stats, cam_layer, precision)
        cam_adversarial, predicted_adversarial = _cams(model, adversarial, stats, cam_layer, precision)
        same_class, _ = _cams(model, adversarial, stats, cam_layer, precision, classes=predicted_clean)
        out.update({f"{v}_adversarial": adversarial.numpy(), f"{v}_eps": np.array(eps), f"{v}_cam_clean": cam_clean.numpy(),
                    f"{v}_cam_adversarial": cam_adversarial.numpy(), f"{v}_cam_adversarial_clean_class": same_class.numpy(),
                    f"{v}_predicted_clean": predicted_clean.numpy(),
                    f"{v}_predicted_adversarial": predicted_adversarial.numpy()})
    return out


def attack_stage(run: RunFolder, config: ExperimentConfig, splits: Splits, executor: Executor, log) -> StageOutcome:
    """Robust accuracy of every model under PGD and AutoAttack, the images that flip first, and how Grad-CAM moves."""
    from stress.analyses.adversarial import summarise_attacks
    from stress.evaluate.probe_shards import attack_shard
    from stress.perturb.pgd import ATTACKS

    s = config.stress
    pending = _pending(run, config, "attack", s.adversarial_images, "--adversarial-images", ATTACK_OPTIONS, ATTACK_VERSION, log)
    if pending is None:
        return StageOutcome("attack", ran=False)
    (key, weights_id), names = pending, model_names(config)
    autoattack = s.autoattack
    check_autoattack(config)
    started = time.perf_counter()
    no_autoattack = None
    if autoattack and len(splits.class_names) < AUTOATTACK_MIN_CLASSES:  # APGD-T's DLR loss reads the 3rd and 4th largest logits
        no_autoattack = f"AutoAttack needs at least {AUTOATTACK_MIN_CLASSES} classes; this dataset has {len(splits.class_names)}"
        log(f"attack: {no_autoattack}: PGD only")
        autoattack = False
    chosen = subset(len(splits.test_y), s.adversarial_images, config.train.seed, 0xAD)
    images, labels = splits.test_x[chosen], splits.test_y[chosen]
    model_config = config.to_dict()["model"]
    weights = load_weights(run, model_config, names)
    weights_ref, images_ref, labels_ref = executor.put(weights), executor.put(images), executor.put(labels)
    on_gpus = executor.task_gpus(config.resources) > 0
    bounds = shard_bounds(len(chosen), attack_task_count(len(chosen), s.shards or executor.slots(config.resources), on_gpus))
    attacks = [(a.norm, a.eps) for a in ATTACKS]
    # The attacks' passes in the run's precision: under bf16 they gave fp32's robust accuracy to within 0.003 on the
    # default run's models (benchmarks/README.md), and the clean predictions they start from are the evaluate stage's.
    # "auto" resolves on each task's device; each task says what it used.
    options = {"steps": s.pgd_steps, "seed": config.train.seed, "autoattack": autoattack, "cam_layer": s.cam_layer or None,
               "precision": config.train.precision}
    tasks = [Task(f"a_{a}_{b}", (weights_ref, model_config, images_ref, labels_ref, a, b, attacks), options, f"attack:{a}-{b}")
             for a, b in bounds]
    log(f"attack: PGD ({s.pgd_steps} steps; L-inf {', '.join(a.label for a in ATTACKS if a.norm == 'linf')}; "
        f"L2 {', '.join(a.label for a in ATTACKS if a.norm == 'l2')})" + (" and AutoAttack (standard, L-inf 8/255)" if autoattack else "")
        + f" in {expected_precision(config.train.precision, on_gpus)} on {len(chosen)} test images x {len(names)} model(s), "
        f"in {len(tasks)} tasks")
    tasks_key = config_key(config.to_dict(), TRAINING_SECTIONS, {"stress": ATTACK_OPTIONS}, ATTACK_SHARD_VERSION)
    results = run_resumable(executor, attack_shard, tasks, run.path("eval", "attack_shards"), shard_key(run, tasks_key), config.resources, log,
                            announce=lambda reused, to_run: log(f"attack: {reused} task(s) already saved, {to_run} to run") if reused else None)
    per_model = {v: {k.split("|", 1)[1]: np.concatenate([results[t.name][k] for t in tasks])
                     for k in results[tasks[0].name] if k.startswith(f"{v}|")} for v in names}
    clean = _clean(run, names, chosen)
    for v in names:
        if not np.array_equal(per_model[v]["clean"].astype(bool), clean[v]):
            log(f"[{v}] attack: clean predictions differ from the evaluate stage's on "
                f"{int((per_model[v]['clean'].astype(bool) != clean[v]).sum())} image(s) (the attacks' batches and device vs the evaluate stage's)")
    precision = used_precision([results[t.name] for t in tasks], "attack", config.train.precision, log)
    mixed = precision.startswith("mixed")
    if mixed:
        log("attack: the adversarial cases are recomputed in fp32")
    record = summarise_attacks(per_model, names, list(ATTACKS), s.pgd_steps, chosen)
    record["precision"] = precision
    if no_autoattack:
        record["autoattack_skipped"] = no_autoattack
    both_clean = np.logical_and.reduce([per_model[v]["clean"].astype(bool) & (per_model[v]["flip"] >= 0) for v in names])
    order = np.lexsort((chosen, sum(per_model[v]["flip"] for v in names)))
    picked = np.sort(order[both_clean[order]][:CASES])
    if len(picked):
        cases = attack_cases(weights, model_config, images[picked], labels[picked], chosen[picked],
                             {v: per_model[v]["flip"][picked] for v in names}, config.train.seed, s.pgd_steps, s.cam_layer or None,
                             precision if precision in ("fp32", "bf16") else "fp32")
        write_npz(run.path("eval", "adversarial_cases.npz"), **cases)
    record["seconds"] = time.perf_counter() - started
    write_npz(run.path("eval", "adversarial.npz"), indices=chosen, **{f"{v}|{k}": a for v in names for k, a in per_model[v].items()})
    write_json(run.path("eval", "adversarial.json"), record)
    for v in names:
        m = record["models"][v]
        robust = ", ".join(f"{name} {number(x['acc'], 3)}" for name, x in m["robust"].items())
        log(f"[{v}] attacks: clean {number(m['clean']['acc'], 3)}; robust accuracy {robust}; {m['first_to_flip_count']} image(s) "
            f"flip at {record['attacks'][0]['label']}")
    for other, d in record.get("differences", {}).items():
        parts = [f"{k} {signed(x['mean'], 3)} {interval_text(x['low'], x['high'], 3)}" + ("*" if x["significant"] else "")
                 for k, x in d["by_attack"].items()]
        log(f"attack: {other} - {d['reference']} robust accuracy: {', '.join(parts)} (unadjusted 95% CI over {len(chosen)} "
            f"images; * significant after Holm over {len(parts)} attacks)")
    run.mark_done("attack", record["seconds"], key, weights=weights_id, tasks=len(tasks), precision=precision)
    return StageOutcome("attack", ran=True, seconds=record["seconds"])
