"""--precision: how `auto` resolves, bf16 training and resume, Grad-CAM and logits in bf16 against fp32."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import resolved_as_before
from test_train import assert_same_weights, run, tensors_for, without_timing  # noqa: E402 - the training helpers

from stress import precision
from stress.analyses.gradcam import gradcam
from stress.augment import CIFAR10_STATS, normalize
from stress.config import ExperimentConfig
from stress.evaluate.predict import predict_logits
from stress.models import create_model

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "run_small"


@pytest.mark.parametrize(("capability", "flags", "expected"), [
    ("AVX512", {"avx512f", "avx512_bf16"}, "bf16"),  # AMD Zen 4: torch reports AVX512, the flags show BF16
    ("AVX512", {"avx512f", "amx_bf16", "amx_tile"}, "bf16"),  # Intel Sapphire Rapids
    ("AMX", set(), "bf16"),
    ("AVX2", {"avx2", "fma"}, "fp32"),  # no bf16 units: auto falls back to fp32
    ("AVX512", {"avx512f", "avx512bw"}, "fp32"),
])
def test_auto_resolves_from_the_cpu_capability(monkeypatch, capability, flags, expected):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    assert precision.resolve_precision("auto", "cpu") == expected
    assert precision.resolve_precision("fp32", "cpu") == "fp32" and precision.resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        precision.resolve_precision("fp16", "cpu")


# The first CPU's lines of a real Zen 4 /proc/cpuinfo, shortened: "model" (a number) comes before "model name",
# and Intel's have a "vmx flags" line after "flags".
CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni
vmx flags\t: vnmi preemption_timer

processor\t: 1
model name\t: another CPU
flags\t\t: fpu amx_bf16
"""


def _naive_model_name(text: str) -> str:
    """Planted: a prefix match, as a quick script might write it."""
    return next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model"))


def test_the_cpu_model_and_bf16_flags_come_from_the_first_cpus_lines(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO)
    monkeypatch.setattr(precision, "CPUINFO", cpuinfo)
    precision.cpu_flags.cache_clear()
    try:
        assert precision.cpu_model() == "AMD EPYC 9R14 96-Core Processor"
        assert precision.cpu_bf16_flags() == ["avx512_bf16"]  # the first CPU's; not the second's amx_bf16
        assert _naive_model_name(CPUINFO) == "17"  # the prefix match the parser must not be
        assert precision.cpu_signature() == "family 25, model 17"  # "model" alone, not "model name"; no stepping line
        monkeypatch.setattr(precision, "CPUINFO", tmp_path / "missing")
        precision.cpu_flags.cache_clear()
        assert precision.cpu_bf16_flags() == [] and precision.cpu_model()  # no file: no flags, the platform's name
        assert precision.cpu_signature() is None
    finally:
        precision.cpu_flags.cache_clear()


def test_precision_is_validated_and_old_run_folders_keep_their_keys():
    from stress.artifacts import config_key
    from stress.driver.stages import evaluation_shard_key
    from stress.errors import StressError

    with pytest.raises(StressError, match="train.precision: unknown 'half'"):
        ExperimentConfig.from_dict({"train": {"precision": "half"}})
    # The fixture's config.json predates the option: its keys must still match (so its saved shards are found again;
    # the evaluate stage's own record moved to version 3 with the label audit) ...
    old = json.loads((FIXTURE / "config.json").read_text())
    assert "precision" not in old["train"]
    config = resolved_as_before(old)
    record = json.loads((FIXTURE / "stages" / "evaluate.json").read_text())
    assert evaluation_shard_key(config) == record["key"]
    # ... while bf16 is another training, with other keys.
    bf16 = ExperimentConfig.from_dict({**old, "train": {**old["train"], "precision": "bf16"}})
    assert config_key(bf16.to_dict(), ("train",)) != config_key(config.to_dict(), ("train",))


@pytest.mark.slow
def test_bf16_training_learns_and_resumes_bit_identically(tiny_config):
    config = tiny_config(**{"data.synthetic_train": 1200, "data.val_size": 200, "train.epochs": 3, "train.precision": "bf16"})
    data = tensors_for(config)
    uninterrupted, epochs, _ = run(config, "augmented", data)
    assert uninterrupted["history"][-1]["val_acc"] > 0.4 and uninterrupted["test"]["acc"] > 0.4  # chance is 0.1
    assert all(p.dtype == torch.float32 for p in uninterrupted["model"].values())  # fp32 master weights
    resumed, _, _ = run(config, "augmented", data, resume=copy.deepcopy(epochs[0][0]))
    assert_same_weights(uninterrupted["model"], resumed["model"])
    assert without_timing(resumed["history"]) == without_timing(uninterrupted["history"])
    fp32, _, _ = run(tiny_config(**{"data.synthetic_train": 1200, "data.val_size": 200, "train.epochs": 3}), "augmented", data)
    assert not torch.equal(fp32["model"]["features.conv1.weight"], uninterrupted["model"]["features.conv1.weight"])  # bf16 did run
    assert {e["precision"] for e in uninterrupted["history"]} == {"bf16"} and {e["precision"] for e in fp32["history"]} == {"fp32"}


# Tolerances for bf16 forward passes of SimpleCNN (8-bit mantissa): probabilities within 0.05,
# Grad-CAM maps (each scaled to its maximum) within 0.1 on average and rank-correlated above 0.9.
PROBABILITY_TOLERANCE, MAP_MEAN_TOLERANCE, MAP_RANK_CORRELATION = 0.05, 0.1, 0.9


@pytest.fixture(scope="module")
def trained_model():
    from stress.config import merge

    config = merge(ExperimentConfig(), {"data.source": "synthetic", "data.synthetic_train": 1000, "data.synthetic_test": 100,
                                        "data.val_size": 100, "model.widths": (8, 16, 32), "model.hidden": 32,
                                        "train.epochs": 2, "train.batch_size": 32, "train.lr": 3e-3})
    data = tensors_for(config)
    state, _, _ = run(config, "baseline", data)
    model = create_model(config.model)
    model.load_state_dict(state["model"])
    return model.eval(), data


def test_bf16_logits_and_gradcam_agree_with_fp32(trained_model):
    from stress.analyses.gradcam import normalize_maps, spearman_rows

    model, data = trained_model
    images = data["test_x"]
    fp32 = predict_logits(model, images, precision="fp32", stats=CIFAR10_STATS)
    bf16 = predict_logits(model, images, precision="bf16", stats=CIFAR10_STATS)
    assert bf16.dtype == torch.float32
    assert (fp32.softmax(1) - bf16.softmax(1)).abs().max() < PROBABILITY_TOLERANCE
    assert (fp32.argmax(1) == bf16.argmax(1)).float().mean() > 0.95
    assert not torch.equal(fp32, bf16)  # the bf16 path really ran in bf16
    targets = fp32.argmax(1)
    maps32 = normalize_maps(gradcam(model, normalize(images), targets))
    maps16 = normalize_maps(gradcam(model, normalize(images), targets, precision="bf16"))
    assert maps16.dtype == torch.float32
    assert (maps32 - maps16).abs().mean() < MAP_MEAN_TOLERANCE
    assert np.nanmean(spearman_rows(maps32, maps16).numpy()) > MAP_RANK_CORRELATION
    # The tolerance can fail: maps of another class are far from these.
    other = normalize_maps(gradcam(model, normalize(images), (targets + 1) % 10, precision="bf16"))
    assert (maps32 - other).abs().mean() > MAP_MEAN_TOLERANCE or np.nanmean(spearman_rows(maps32, other).numpy()) < MAP_RANK_CORRELATION


def test_the_fan_out_shards_run_in_bf16_and_return_float_arrays(trained_model):
    """What the evaluate and stress stages call on every shard, with faithfulness curves on.

    bf16 values reaching `.numpy()` fail ("unsupported ScalarType BFloat16"); every float
    array a shard returns must be float32/float64, and close to the fp32 shard's.
    """
    from stress.evaluate.shards import evaluate_shard, stress_shard

    model, data = trained_model
    images = (data["test_x"][:24]).cpu().numpy()
    labels = data["test_y"][:24].cpu().numpy()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    config = {**ExperimentConfig().to_dict()["model"], "widths": [8, 16, 32], "hidden": 32}  # the trained_model fixture's
    shards = {p: evaluate_shard(state, config, images, labels, 0, len(labels), faithfulness_every=3, faithfulness_steps=4,
                                seed=1, precision=p) for p in ("fp32", "bf16")}
    for name, array in shards["bf16"].items():
        assert array.dtype != np.dtype("O") and (array.dtype.kind != "f" or array.dtype in (np.float32, np.float64)), name
    assert len(shards["bf16"]["faithful_indices"]) == 8
    assert np.abs(shards["bf16"]["faithful_deletion_auc"] - shards["fp32"]["faithful_deletion_auc"]).max() < 0.1
    cells = stress_shard({"baseline": state, "augmented": state}, config, images, labels, 0, len(labels),
                         [("gaussian_noise", 1), ("translate_2_0", 0)], seed=1, precision="bf16")
    assert str(cells.pop("precision")) == str(shards["bf16"]["precision"]) == "bf16" and str(shards["fp32"]["precision"]) == "fp32"
    for cell, arrays in cells.items():
        for name, array in arrays.items():
            assert array.dtype.kind != "f" or array.dtype in (np.float32, np.float64), (cell, name)


@pytest.mark.slow
def test_compiled_stress_shards_agree_with_eager_and_old_keys_hold(trained_model):
    """--compile changes how the forward passes run, not what they give, so it is not part of the stress key."""
    from stress.config import merge
    from stress.driver.stages import stress_shard_key
    from stress.evaluate.shards import stress_shard

    model, data = trained_model
    images, labels = data["test_x"][:40].cpu().numpy(), data["test_y"][:40].cpu().numpy()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    config = {**ExperimentConfig().to_dict()["model"], "widths": [8, 16, 32], "hidden": 32}
    cells = [("gaussian_noise", 2), ("translate_2_0", 0)]
    eager, compiled = (stress_shard({"baseline": state}, config, images, labels, 0, 40, cells, seed=1, batch_size=16, compile=c)
                       for c in (False, True))
    assert str(eager.pop("precision")) == str(compiled.pop("precision")) == "fp32"
    for cell in eager:
        assert np.array_equal(eager[cell]["correct"], compiled[cell]["correct"]), cell
        assert np.abs(eager[cell]["confidence"] - compiled[cell]["confidence"]).max() < 1e-4, cell
    from stress.evaluate.shards import fourier_shard

    freqs = [(0, 1), (1, 0), (3, 5), (7, 2), (16, 16)]
    eager_f, compiled_f = (fourier_shard({"baseline": state}, config, images, labels, 0, 40, freqs, seed=1, batch_size=80, compile=c)
                           for c in (False, True))
    assert np.array_equal(eager_f["baseline"], compiled_f["baseline"])
    default = resolved_as_before({})
    assert default.stress.compile == "auto"
    for setting in ("on", "off", "auto"):
        # The saved stress shards' key of every run folder before it: those shards are reused.
        assert stress_shard_key(merge(default, {"stress.compile": setting})) == "483a423397d4cab0"


def test_a_compile_failure_falls_back_to_eager_with_one_line(trained_model, monkeypatch, capsys):
    """Where inductor cannot build (no compiler, an unsupported op), the task still gives the eager results."""
    from stress.evaluate.shards import stress_shard

    model, data = trained_model
    images, labels = data["test_x"][:24].cpu().numpy(), data["test_y"][:24].cpu().numpy()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    config = {**ExperimentConfig().to_dict()["model"], "widths": [8, 16, 32], "hidden": 32}
    cells = [("contrast", 3), ("translate_2_0", 0)]
    calls = []

    class Broken(torch.nn.Module):
        def forward(self, x):
            calls.append(len(x))
            raise RuntimeError("InductorError: CppCompileError: C++ compile error\ng++: not found")

    import stress.evaluate.shards as shards

    monkeypatch.setattr(shards, "_COMPILE_FAILED", [])  # a fresh worker process
    monkeypatch.setattr(torch, "compile", lambda module: Broken())
    eager = stress_shard({"baseline": state, "augmented": state}, config, images, labels, 0, 24, cells, seed=1, batch_size=8)
    eager.pop("precision")
    for task in range(2):  # two tasks in one worker: the second does not try again
        fallen = stress_shard({"baseline": state, "augmented": state}, config, images, labels, 0, 24, cells, seed=1,
                              batch_size=8, compile=True)
        fallen.pop("precision")
        assert calls == [8]  # the first compiled call failed; none was tried after it
        assert eager.keys() == fallen.keys()
        for cell in eager:
            for field in ("correct", "confidence", "nll"):
                assert np.array_equal(eager[cell][field], fallen[cell][field]), (cell, field, task)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["stress: torch.compile failed (RuntimeError: InductorError: CppCompileError: C++ compile error); "
                   "this worker's forward passes run eagerly"]
    # Planted: a compiled model that runs but answers otherwise is not taken for eager by the comparison above.
    class Wrong(torch.nn.Module):
        def forward(self, x):
            return torch.zeros(len(x), 10)

    monkeypatch.setattr(shards, "_COMPILE_FAILED", [])
    monkeypatch.setattr(torch, "compile", lambda module: Wrong())
    wrong = stress_shard({"baseline": state}, config, images, labels, 0, 24, cells, seed=1, batch_size=8, compile=True)
    assert not np.array_equal(wrong["baseline|contrast|3"]["confidence"], eager["baseline|contrast|3"]["confidence"])


def test_a_compile_failure_in_a_fourier_task_falls_back_to_eager_with_one_line(trained_model, monkeypatch, capsys):
    from stress.evaluate.shards import fourier_shard

    model, data = trained_model
    images, labels = data["test_x"][:12].cpu().numpy(), data["test_y"][:12].cpu().numpy()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    config = {**ExperimentConfig().to_dict()["model"], "widths": [8, 16, 32], "hidden": 32}
    freqs = [(0, 1), (2, 3), (5, 5)]

    class Broken(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("InductorError: CppCompileError: C++ compile error")

    import stress.evaluate.shards as shards

    monkeypatch.setattr(shards, "_COMPILE_FAILED", [])
    monkeypatch.setattr(torch, "compile", lambda module: Broken())
    eager = fourier_shard({"baseline": state}, config, images, labels, 0, 12, freqs, seed=1, batch_size=24)
    fallen = fourier_shard({"baseline": state}, config, images, labels, 0, 12, freqs, seed=1, batch_size=24, compile=True)
    assert np.array_equal(eager["baseline"], fallen["baseline"])
    assert capsys.readouterr().err.strip().splitlines() == [
        "fourier: torch.compile failed (RuntimeError: InductorError: CppCompileError: C++ compile error); this worker's forward passes run eagerly"]


@pytest.mark.parametrize(("images", "frequencies", "batch"), [
    (250, 514, 500), (500, 64, 500), (7, 10, 24), (30, 514, 500), (600, 3, 500), (13, 5, 13), (1, 9, 4),
])
def test_fourier_batches_count_the_forward_calls_of_fourier_correct(images, frequencies, batch):
    """Against a slow count: the forward calls a model actually gets in fourier_correct."""
    from stress.evaluate.shards import fourier_batches, fourier_correct

    calls = []

    class Counting(torch.nn.Module):
        def forward(self, x):
            calls.append(len(x))
            return torch.zeros(len(x), 10)

    x = torch.zeros(images, 3, 32, 32, dtype=torch.uint8)
    y = torch.zeros(images, dtype=torch.int64)
    freqs = [(k % 17, k // 17) for k in range(frequencies)]
    fourier_correct({"m": Counting()}, x, y, freqs, seed=0, start=0, norm=4.0, batch_size=batch)
    assert sum(calls) == images * frequencies and max(calls) <= batch
    assert fourier_batches(images, frequencies, batch) == len(calls)


def test_the_planted_naive_fourier_count_is_told_apart():
    """ceil(images x frequencies / batch) ignores that fourier_correct never splits an image's frequency across batches:
    the count test above would catch a formula like it (7 images, 10 frequencies, batch 24: 4 calls, not 3)."""
    from stress.evaluate.shards import fourier_batches

    assert fourier_batches(7, 10, 24) == 4 and -(-7 * 10 // 24) == 3


def test_one_compile_decision_counts_the_stress_and_fourier_batches_of_a_job():
    """A default CIFAR-10 run on 2 CPU slots: 5,840 stress batches + 2 models x 2 shards x (514 frequencies in 9 tasks of
    <= 64, 2 per batch of 500 images) = 5,840 + 1,028 batches, 3,434 per worker; without the Fourier stage 2,920."""
    from stress.config import merge
    from stress.driver.forward_plan import compile_decision, fourier_forward_batches, stress_plan

    class Slots:
        def __init__(self, slots, gpus=0.0):
            self.n, self.gpus = slots, gpus

        def slots(self, resources):
            return self.n

        def task_gpus(self, resources):
            return self.gpus

    default = ExperimentConfig()
    assert stress_plan(default, 10000, Slots(2)).forward_batches(2) == 5840
    # 9 tasks (8 of 64 frequencies, 1 of 2), 2 shards of 250 images: 32 + ... + 1 batches per model and shard.
    assert fourier_forward_batches(default, 10000, Slots(2)) == 2 * 2 * (8 * 32 + 1) == 1028
    assert compile_decision(default, 10000, Slots(2))[1] == "auto: 3,434 forward batches per worker, compiling pays above 1,000"
    without = merge(default, {"stress.fourier_images": 0})
    assert compile_decision(without, 10000, Slots(2))[1] == "auto: 2,920 forward batches per worker, compiling pays above 1,000"
    # A smoke run: 1,000 stress images and 100 Fourier images on 2 slots.
    small = merge(default, {"stress.stress_limit": 1000, "stress.fourier_images": 100})
    # Shards of 50 images, 10 frequencies per batch: 7 batches for each task of 64 frequencies, 1 for the last of 2.
    assert fourier_forward_batches(small, 10000, Slots(2)) == 2 * 2 * (8 * 7 + 1)
    assert compile_decision(small, 10000, Slots(2))[0] is False
    assert fourier_forward_batches(merge(default, {"stress.skip_stress": True}), 10000, Slots(2)) == 0
    assert compile_decision(default, 10000, Slots(2, gpus=0.5))[0] is False


@pytest.mark.parametrize(("setting", "model", "task_gpus", "batches", "compiler", "expected"), [
    ("on", "torchvision:resnet18", 0.25, 10, False, True),  # "on" and "off" decide
    ("off", "simple_cnn", 0.0, 10**6, True, False),
    ("auto", "simple_cnn", 0.0, 2920, True, True),  # a default CIFAR-10 run on 2 CPUs
    ("auto", "simple_cnn", 0.0, 1000, True, True),
    ("auto", "simple_cnn", 0.0, 999, True, False),  # a smoke run: the compile time is not won back
    ("auto", "simple_cnn", 0.25, 2920, True, False),  # GPU tasks: unmeasured
    ("auto", "timm:resnet18", 0.0, 2920, True, False),  # other networks: unmeasured
    ("auto", "simple_cnn", 0.0, 2920, False, False),  # no C++ compiler for inductor
])
def test_compile_auto_turns_on_only_where_it_was_measured_to_pay(monkeypatch, setting, model, task_gpus, batches, compiler,
                                                                 expected):
    monkeypatch.setattr(precision, "cpp_compiler_available", lambda: compiler)
    compiled, why = precision.resolve_compile(setting, model, task_gpus, batches)
    assert compiled is expected
    assert why.startswith(f"--compile {setting}" if setting != "auto" else "auto: ")
    with pytest.raises(ValueError, match="unknown compile setting 'yes'"):
        precision.resolve_compile("yes", model, task_gpus, batches)


def test_the_stress_stage_counts_its_forward_batches_as_the_benchmark_does():
    """A default CIFAR-10 run: 10,000 images x (17 x 5 corruptions + 61 shifts) x 2 models / 500 = 5,840 batches."""
    from stress.constants import CORRUPTIONS
    from stress.driver.fanout import forward_batches, shard_bounds
    from stress.driver.forward_plan import STRESS_BATCH
    from stress.perturb.shifts import list_shifts

    cells = len(CORRUPTIONS) * 5 + len(list_shifts())
    assert cells == 146
    for shards in (1, 2, 4, 5, 20):
        assert forward_batches(shard_bounds(10000, shards), cells, 2, STRESS_BATCH) == 10000 * 146 * 2 // 500
    # A shard that does not fill its last batch still costs that batch: 7 shards of 1,428-1,429 images take 3 each,
    # 2 shards of 250 images one each.
    assert forward_batches(shard_bounds(10000, 7), cells, 2, STRESS_BATCH) == 7 * 3 * 146 * 2
    assert forward_batches(shard_bounds(500, 2), 1, 1, 500) == 2
    assert forward_batches(shard_bounds(500, 1), 1, 1, 500) == 1


def test_compile_settings_from_files_and_flags():
    from stress.cli import ArgumentParser, add_experiment_flags, config_from_args
    from stress.errors import StressError

    # Config files written when --compile was a switch hold true / false.
    assert ExperimentConfig.from_dict({"stress": {"compile": True}}).stress.compile == "on"
    assert ExperimentConfig.from_dict({"stress": {"compile": False}}).stress.compile == "off"
    with pytest.raises(StressError, match="stress.compile: unknown 'always'; valid choices: auto, on, off"):
        ExperimentConfig.from_dict({"stress": {"compile": "always"}})
    parser = ArgumentParser(prog="stress run")
    add_experiment_flags(parser)
    for argv, expected in (([], "auto"), (["--compile"], "on"), (["--compile", "off"], "off"), (["--compile=auto"], "auto")):
        assert config_from_args(parser.parse_args(argv)).stress.compile == expected, argv
    with pytest.raises(StressError, match="stress.compile: unknown 'never'"):
        config_from_args(parser.parse_args(["--compile", "never"]))
