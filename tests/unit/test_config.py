"""stress.config (dict round trip, validation, merge, config files) and stress.cli (flags -> config)."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest

from stress.cli import EXPERIMENT_FLAGS, add_experiment_flags, config_from_args, run_main
from stress.config import ExperimentConfig, load_config_file, merge
from stress.errors import Interrupted, StressError


def config_error(values: dict) -> str:
    with pytest.raises(StressError) as info:
        ExperimentConfig.from_dict(values)
    message = str(info.value)
    assert "\n" not in message, message
    return message


# ---------------------------------------------------------------- round trip


def test_default_round_trip():
    config = ExperimentConfig()
    values = config.to_dict()
    assert ExperimentConfig.from_dict(values) == config
    assert values["train"]["epochs"] == 15 and values["model"]["widths"] == [32, 64, 128]


def test_non_default_round_trip_through_json_keeps_tuples():
    values = {
        "run_name": "trial",
        "data": {"source": "synthetic", "val_size": 100},
        "model": {"widths": [8, 16, 32], "hidden": 64},
        "train": {"epochs": 3, "lr": 0.01, "seed": 7},
        "stress": {"severities": [1, 3], "num_cases": 4, "skip_stress": True},
        "resources": {"workers_per_trainer": 2, "gpus_per_worker": 0.5},
    }
    config = ExperimentConfig.from_dict(values)
    assert config.model.widths == (8, 16, 32) and isinstance(config.model.widths, tuple)
    assert config.stress.severities == (1, 3)
    assert config.data.val_size == 100 and config.data.train_limit == 0  # unspecified keys keep defaults
    again = ExperimentConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.train.epochs = 5  # type: ignore[misc]


def test_unknown_keys_are_named():
    message = config_error({"trian": {}, "zebra": 1})
    assert "trian" in message and "zebra" in message
    nested = config_error({"train": {"epochs": 2, "epoch": 3}})
    assert "config.train" in nested and "epoch" in nested and "valid:" in nested


@pytest.mark.parametrize(
    "values, needle",
    [
        ({"train": {"epochs": 0}}, "train.epochs"),
        ({"train": {"epochs": -2}}, "train.epochs"),
        ({"train": {"epochs": True}}, "train.epochs"),
        ({"train": {"epochs": 2.0}}, "train.epochs"),
        ({"train": {"lr": float("nan")}}, "train.lr"),
        ({"train": {"lr": float("inf")}}, "train.lr"),
        ({"train": {"lr": 0}}, "train.lr"),
        ({"train": {"batch_size": "64"}}, "train.batch_size"),
        ({"train": {"flip_probability": 1.5}}, "train.flip_probability"),
        ({"data": {"val_size": -1}}, "data.val_size"),
        ({"data": {"train_limit": False}}, "data.train_limit"),
        ({"model": {"widths": [32, 64]}}, "model.widths"),
        ({"model": {"widths": "32"}}, "model.widths"),
        ({"model": {"image_size": 30}}, "model.image_size"),
        ({"stress": {"severities": [0]}}, "stress.severities"),
        ({"stress": {"severities": [1, 6]}}, "stress.severities"),
        ({"stress": {"severities": []}}, "stress.severities"),
        ({"stress": {"severities": [True]}}, "stress.severities"),
        ({"stress": {"num_cases": 2}}, "stress.num_cases"),
        ({"stress": {"corruptions": "fog"}}, "stress.corruptions"),
        ({"resources": {"cpus_per_worker": 0}}, "resources.cpus_per_worker"),
        ({"resources": {"gpus_per_worker": -0.5}}, "resources.gpus_per_worker"),
        ({"run_name": "a/b"}, "run_name"),
        ({"run_name": ""}, "run_name"),
        ({"run_name": ".hidden"}, "run_name"),
        ({"train": 3}, "config.train"),
    ],
)
def test_invalid_values_name_the_field(values, needle):
    assert needle in config_error(values)


def test_batch_size_must_divide_over_workers():
    message = config_error({"train": {"batch_size": 10}, "resources": {"workers_per_trainer": 3}})
    assert "train.batch_size" in message and "3 workers" in message
    assert ExperimentConfig.from_dict({"train": {"batch_size": 12}, "resources": {"workers_per_trainer": 3}}).train.batch_size == 12


def test_corruption_names_are_checked():
    corruptions = pytest.importorskip("stress.perturb.corruptions")
    first = next(iter(corruptions.CORRUPTIONS))
    assert ExperimentConfig.from_dict({"stress": {"corruptions": [first]}}).stress.corruptions == (first,)
    message = config_error({"stress": {"corruptions": [first, "sparkles"]}})
    assert "sparkles" in message and first in message  # names the bad one and lists the valid ones


def test_string_flip_probability_is_a_stress_error():
    config_error({"train": {"flip_probability": "0.5"}})


def test_string_image_size_is_a_stress_error():
    config_error({"model": {"image_size": "32"}})


def test_zero_image_size_is_rejected():
    config_error({"model": {"image_size": 0}})


def test_float_severity_is_rejected():
    config_error({"stress": {"severities": [2.0]}})


# ---------------------------------------------------------------- merge


def test_merge_applies_dotted_overrides_and_keeps_the_original():
    base = ExperimentConfig()
    merged = merge(base, {"train.epochs": 3, "data.source": "synthetic", "stress.severities": (2, 4), "run_name": "x"})
    assert merged.train.epochs == 3 and merged.data.source == "synthetic"
    assert merged.stress.severities == (2, 4) and merged.run_name == "x"
    assert merged.train.lr == base.train.lr
    assert base.train.epochs == 15 and base.run_name == "default"


def test_merge_validates_and_rejects_unknown_leaves():
    with pytest.raises(StressError, match="train.epochs"):
        merge(ExperimentConfig(), {"train.epochs": 0})
    with pytest.raises(StressError, match="epochz"):
        merge(ExperimentConfig(), {"train.epochz": 3})


# ---------------------------------------------------------------- config files


def test_load_json_and_yaml_files(tmp_path):
    pytest.importorskip("yaml")
    values = {"train": {"epochs": 4, "lr": 0.002}, "stress": {"severities": [1, 2]}}
    json_path = tmp_path / "c.json"
    json_path.write_text(json.dumps(values))
    yaml_path = tmp_path / "c.yaml"
    yaml_path.write_text("train:\n  epochs: 4\n  lr: 0.002\nstress:\n  severities: [1, 2]\n")
    yml_path = tmp_path / "c.yml"
    yml_path.write_text("# only a comment\n")
    assert load_config_file(json_path) == values
    assert load_config_file(yaml_path) == values
    assert load_config_file(yml_path) == {}
    assert ExperimentConfig.from_dict(load_config_file(yaml_path)).train.epochs == 4


@pytest.mark.parametrize(
    "name, content, needle",
    [
        ("bad.json", '{"train": {"epochs": 3,}}', "not valid JSON"),
        ("bad.json", "", "not valid JSON"),
        ("bad.yaml", "train: [1, 2\nstress:\n  - {", "not valid YAML"),
        ("bad.yaml", "a: b: c\n", "not valid YAML"),
        ("list.json", "[1, 2]", "top level must be a mapping"),
        ("scalar.yaml", "42\n", "top level must be a mapping"),
    ],
)
def test_corrupt_config_files_give_one_line_naming_the_file(tmp_path, name, content, needle):
    if name.endswith(".yaml"):
        pytest.importorskip("yaml")
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(StressError) as info:
        load_config_file(path)
    message = str(info.value)
    assert str(path) in message and needle in message and "\n" not in message


def test_missing_or_unreadable_config_file(tmp_path):
    for path in (tmp_path / "absent.json", tmp_path):
        with pytest.raises(StressError) as info:
            load_config_file(path)
        assert str(path) in str(info.value) and "cannot read" in str(info.value)


def test_binary_config_file_is_a_stress_error(tmp_path):
    path = tmp_path / "binary.json"
    path.write_bytes(b"\xff\xfe\x00\x80 not text")
    with pytest.raises(StressError, match="binary.json"):
        load_config_file(path)


# ---------------------------------------------------------------- cli


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_experiment_flags(parser)
    return parser.parse_args(argv)


def test_every_flag_maps_to_an_existing_config_key():
    defaults = ExperimentConfig().to_dict()
    for flag, (dotted, _, _) in EXPERIMENT_FLAGS.items():
        node = defaults
        for key in dotted.split("."):
            assert isinstance(node, dict) and key in node, f"--{flag} -> {dotted}"
            node = node[key]


def test_no_flags_give_the_defaults():
    assert config_from_args(parse([])) == ExperimentConfig()


def test_flags_override_the_config_file(tmp_path):
    path = tmp_path / "exp.json"
    path.write_text(json.dumps({"run_name": "from-file", "train": {"epochs": 7, "lr": 0.01}, "data": {"val_size": 300}}))
    config = config_from_args(parse(["--config", str(path), "--epochs", "3", "--data", "synthetic", "--seed", "9"]))
    assert config.train.epochs == 3  # flag beats file
    assert config.train.lr == 0.01 and config.data.val_size == 300 and config.run_name == "from-file"  # file beats defaults
    assert config.data.source == "synthetic" and config.train.seed == 9
    assert config.train.batch_size == 128  # default
    assert config.stress.skip_stress is False
    assert config_from_args(parse(["--skip-stress"])).stress.skip_stress is True


def test_list_flags_are_parsed():
    corruptions = pytest.importorskip("stress.perturb.corruptions")
    first, second = list(corruptions.CORRUPTIONS)[:2]
    config = config_from_args(parse(["--corruptions", f"{first}, {second},", "--severities", "1,3"]))
    assert config.stress.corruptions == (first, second)
    assert config.stress.severities == (1, 3)


@pytest.mark.parametrize("argv, needle", [(["--severities", "1,x"], "--severities"), (["--severities", "1,9"], "stress.severities")])
def test_bad_list_flags_are_stress_errors(argv, needle):
    with pytest.raises(StressError, match=needle):
        config_from_args(parse(argv))


def test_bad_config_file_through_the_cli(tmp_path):
    path = tmp_path / "exp.json"
    path.write_text(json.dumps({"train": {"epochs": 7, "momentum": 0.9}}))
    with pytest.raises(StressError, match="momentum"):
        config_from_args(parse(["--config", str(path)]))


def test_run_main_exit_codes(capsys):
    def fails():
        raise StressError("data.npz: broken")

    with pytest.raises(SystemExit) as info:
        run_main(fails)
    assert info.value.code == 2
    assert capsys.readouterr().err == "error: data.npz: broken\n"

    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as info:
        run_main(interrupted)
    assert info.value.code == 130 and capsys.readouterr().err == "interrupted\n"  # claims nothing was saved

    def interrupted_run():
        raise Interrupted("interrupted: saved stage(s) train_baseline in /r; re-run the same command to resume")

    with pytest.raises(SystemExit) as info:
        run_main(interrupted_run)
    assert info.value.code == 130 and "saved stage(s) train_baseline" in capsys.readouterr().err

    with pytest.raises(SystemExit) as info:
        run_main(lambda: 0)
    assert info.value.code == 0


@pytest.mark.parametrize(("values", "needle"), [
    ({"stress": {"corruptions": ["gaussian_noise", "gaussian_noise", "contrast"]}}, "stress.corruptions: gaussian_noise listed more than once"),
    ({"stress": {"severities": [1, 2, 2]}}, "stress.severities: 2 listed more than once"),
    ({"model": {"name": "resnet"}}, "model.name: unknown 'resnet'; valid: simple_cnn, torchvision:NAME, timm:NAME, package.module:callable"),
    ({"train": {"seed": 2**64}}, "train.seed must be <= 4294967295 (32 bits)"),
    ({"train": {"lr": "1e-3"}}, "train.lr must be a finite number, got '1e-3' (a string: YAML 1.1 reads 1e-3 as text"),
])
def test_options_that_used_to_fail_late_are_refused_by_validation(values, needle):
    assert needle in config_error(values)


def test_yaml_exponent_without_a_dot_gets_a_hint(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 1e-3\n")
    assert "YAML 1.1 reads 1e-3 as text" in config_error(load_config_file(path))


def test_argparse_errors_are_one_line(capsys):
    from stress.cli import ArgumentParser

    parser = ArgumentParser(prog="stress_test.py")
    add_experiment_flags(parser)
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--epochs", "three"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: argument --epochs: invalid int value: 'three'")


@pytest.mark.parametrize(("values", "needle"), [
    ({"data": {"source": 5}}, "data.source must be a non-empty string, got 5"),
    ({"out": None}, "out must be a non-empty string, got None"),
    ({"stress": {"skip_stress": "no"}}, "stress.skip_stress must be true or false, got 'no'"),
    ({"stress": {"corruptions": [["fog"]]}}, "stress.corruptions[0] must be a non-empty string, got ['fog']"),
    ({"train": {"precision": 16}}, "train.precision must be a non-empty string, got 16"),
    ({"train": {"epochs": "3"}}, "train.epochs must be a finite integer, got '3' (a string; write the number without quotes)"),
    ({"data": {"source": "~no_such_user_here/x.npz"}}, "cannot expand '~' (data.source: no such user or no home folder)"),
    ({"out": "~no_such_user_here/runs"}, "cannot expand '~' (out: no such user or no home folder)"),
])
def test_values_of_the_wrong_type_or_unexpandable_paths_are_one_line_errors(values, needle):
    # Each of these used to end in a TypeError, or a RuntimeError from Path.expanduser.
    assert needle in config_error(values)


def test_an_unexpandable_config_path_is_a_one_line_error():
    with pytest.raises(StressError, match=r"~no_such_user_here/c.json: cannot expand '~' \(--config"):
        load_config_file("~no_such_user_here/c.json")
