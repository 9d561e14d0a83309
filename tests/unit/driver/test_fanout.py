"""Sharding, merging, and the resumable fan-out both fan-out stages use."""

from __future__ import annotations

import numpy as np
import pytest

from stress.config import ResourceConfig
from stress.driver.fanout import (STAGE_KEY, LocalExecutor, Task, flatten_cells, load_saved_shard, merge_shards, run_resumable,
                                  shard_bounds, unflatten_cells, used_precision)
from stress.errors import StressError


@pytest.mark.parametrize("n, shards", [(10, 3), (7, 7), (5, 9), (10000, 4), (1, 1)])
def test_shard_bounds_cover_every_index_once(n, shards):
    bounds = shard_bounds(n, shards)
    covered = np.concatenate([np.arange(a, b) for a, b in bounds])
    np.testing.assert_array_equal(covered, np.arange(n))
    assert all(b > a for a, b in bounds) and len(bounds) == min(n, shards)


def test_merge_rejects_missing_or_duplicated_images():
    part = lambda a, b: {"indices": np.arange(a, b), "predicted": np.zeros(b - a), "seconds_predict": np.array([1.0])}  # noqa: E731
    merged = merge_shards([part(5, 10), part(0, 5)], 10)
    np.testing.assert_array_equal(merged["indices"], np.arange(10))
    assert merged["seconds_predict"][0] == 2.0
    with pytest.raises(RuntimeError, match="exactly once"):
        merge_shards([part(0, 5), part(4, 10)], 10)
    with pytest.raises(RuntimeError, match="exactly once"):
        merge_shards([part(0, 5)], 10)


class Recording(LocalExecutor):
    def __init__(self):
        self.calls: list[str] = []

    def run(self, function, calls, resources, on_result, log):
        self.calls += [label for label, _, _ in calls]
        super().run(function, calls, resources, on_result, log)


def square(start: int, stop: int) -> dict:
    return {"indices": np.arange(start, stop), "value": np.arange(start, stop) ** 2}


def tasks() -> list[Task]:
    return [Task(f"part_{a}_{b}", (a, b), {}, f"part:{a}-{b}") for a, b in shard_bounds(10, 3)]


def test_a_fan_out_saves_each_result_and_a_re_run_reuses_them(tmp_path):
    first = Recording()
    results = run_resumable(first, square, tasks(), tmp_path, "key-1", ResourceConfig(), lambda line: None)
    assert first.calls == ["part:0-3", "part:3-7", "part:7-10"]  # labels in progress lines, file stems on disk
    assert sorted(p.name for p in tmp_path.glob("*.npz")) == ["part_0_3.npz", "part_3_7.npz", "part_7_10.npz"]
    np.testing.assert_array_equal(merge_shards(list(results.values()), 10)["value"], np.arange(10) ** 2)
    again, announced = Recording(), []
    reused = run_resumable(again, square, tasks(), tmp_path, "key-1", ResourceConfig(), lambda line: None,
                           announce=lambda r, t: announced.append((r, t)))
    assert again.calls == [] and announced == [(3, 0)]
    for name, value in results.items():
        np.testing.assert_array_equal(reused[name]["value"], value["value"])


def test_a_result_saved_under_another_key_or_unreadable_is_recomputed(tmp_path):
    run_resumable(LocalExecutor(), square, tasks(), tmp_path, "key-1", ResourceConfig(), lambda line: None)
    saved = tmp_path / "part_3_7.npz"
    saved.write_bytes(saved.read_bytes()[:100])  # truncated
    lines: list[str] = []
    other = Recording()
    run_resumable(other, square, tasks(), tmp_path, "key-2", ResourceConfig(), lines.append)
    assert other.calls == ["part:0-3", "part:3-7", "part:7-10"]  # a new key: nothing reused
    assert any(line.startswith("part_3_7.npz: unreadable saved shard (") for line in lines)
    # The two files saved under key-1 share one line: a re-run after an upgrade names every refused task once, not a line each.
    assert f"{tmp_path.name}: 2 saved tasks (part_0_3.npz ... part_7_10.npz): saved under other options or older code: recomputed" in lines
    assert len([line for line in lines if "recomputed" in line]) == 2, lines
    assert all(str(np.load(p)[STAGE_KEY]) == "key-2" for p in tmp_path.glob("*.npz"))
    # Only the file that is missing now runs again.
    (tmp_path / "part_7_10.npz").unlink()
    last = Recording()
    run_resumable(last, square, tasks(), tmp_path, "key-2", ResourceConfig(), lines.append)
    assert last.calls == ["part:7-10"] and load_saved_shard(tmp_path / "part_7_10.npz", "key-2", lines.append) is not None


def test_a_failing_task_keeps_the_results_saved_before_it(tmp_path):
    def flaky(start: int, stop: int) -> dict:
        if start == 3:
            raise StressError("task failed")
        return square(start, stop)

    with pytest.raises(StressError):
        run_resumable(LocalExecutor(), flaky, tasks(), tmp_path, "k", ResourceConfig(), lambda line: None)
    assert [p.name for p in tmp_path.glob("*.npz")] == ["part_0_3.npz"]
    again = Recording()
    run_resumable(again, square, tasks(), tmp_path, "k", ResourceConfig(), lambda line: None)
    assert again.calls == ["part:3-7", "part:7-10"]


def square_in(precision: str, start: int, stop: int) -> dict:
    """A task that ran in `precision` (what "auto" resolved to on its device)."""
    return {**square(start, stop), "precision": np.array(precision)}


@pytest.mark.parametrize("resolved, expected", [
    (["bf16", "bf16", "bf16"], "bf16"),
    (["fp32", "bf16", "fp32"], "mixed (bf16, fp32)"),
    ([None, "fp32", None], "mixed (fp32, unrecorded)"),  # shards saved before the entry, beside new ones
    ([None, None, None], "unrecorded"),
])
def test_a_stage_says_what_its_tasks_ran_in_and_logs_a_mix(resolved, expected):
    results = [{"value": np.arange(3)} | ({} if p is None else {"precision": np.array(p)}) for p in resolved]
    lines: list[str] = []
    assert used_precision(results, "stress", "auto", lines.append) == expected
    assert all("precision" not in r and "value" in r for r in results)  # taken out, so merging sees per-image arrays only
    mixed = len(set(resolved)) > 1
    assert lines == ([f"stress: its tasks ran in {' and '.join(expected[7:-1].split(', '))} under --precision auto (nodes with "
                      "and without fast bf16, or shards saved on another machine or by older code): its results mix them "
                      "(a run with --precision fp32 or bf16 has one)"] if mixed else [])


def test_a_resumed_fan_out_on_another_machine_is_recorded_as_mixed(tmp_path):
    """The key holds the literal --precision ("auto"), so shards saved where it meant fp32 are reused where it means bf16:
    the record must say so rather than name one precision."""
    run_resumable(LocalExecutor(), square_in, [Task(t.name, ("fp32", *t.args), {}, t.label) for t in tasks()], tmp_path, "k",
                  ResourceConfig(), lambda line: None)
    (tmp_path / "part_7_10.npz").unlink()
    results = run_resumable(LocalExecutor(), square_in, [Task(t.name, ("bf16", *t.args), {}, t.label) for t in tasks()], tmp_path,
                            "k", ResourceConfig(), lambda line: None)
    assert {n: str(r["precision"]) for n, r in results.items()} == {"part_0_3": "fp32", "part_3_7": "fp32", "part_7_10": "bf16"}
    assert used_precision(list(results.values()), "evaluate", "auto", lambda line: None) == "mixed (bf16, fp32)"
    np.testing.assert_array_equal(merge_shards(list(results.values()), 10)["value"], np.arange(10) ** 2)


def test_stress_cells_and_the_precision_entry_survive_the_saved_form():
    value = {"baseline|fog|3": {"correct": np.array([True, False]), "nll": np.array([0.1, 2.0])},
             "augmented|hflip|0": {"correct": np.array([False, False]), "nll": np.array([1.0, 3.0])}, "precision": np.array("bf16")}
    flat = flatten_cells(value)
    assert set(flat) == {"baseline|fog|3#correct", "baseline|fog|3#nll", "augmented|hflip|0#correct", "augmented|hflip|0#nll", "precision"}
    back = unflatten_cells(flat)
    assert back.keys() == value.keys() and str(back["precision"]) == "bf16"
    for cell in ("baseline|fog|3", "augmented|hflip|0"):
        assert all(np.array_equal(back[cell][f], value[cell][f]) for f in ("correct", "nll"))
