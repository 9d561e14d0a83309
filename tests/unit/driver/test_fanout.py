"""Sharding, merging, and the resumable fan-out both fan-out stages use."""

from __future__ import annotations

import numpy as np
import pytest

from stress.config import ResourceConfig
from stress.driver.fanout import STAGE_KEY, LocalExecutor, Task, load_saved_shard, merge_shards, run_resumable, shard_bounds
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
