"""What the lines of a job's log are: the project's own progress, or another process's line that is explained.

`sort_lines(text)` returns (own, explained, unexplained): own lines counted, explained ones
counted under the reason a user reads in the README ("What a run's log holds"), and every line
neither pattern knows. The e2e tests fail on any unexplained line.
"""

from __future__ import annotations

import re
from collections import Counter

ANSI = re.compile(r"\x1b\[[0-9;]*m")
RAY_PREFIX = re.compile(r"^\((?:[A-Za-z_:.]+) pid=\d+(?:, ip=[0-9.]+)?\) ")  # what log_to_driver puts before a worker's line
SEED_TAG = re.compile(r"^\[seed \d+\] ")  # what a sweep's trial puts before its lines
OWN = [re.compile(p) for p in (
    r"^data: ", r"^ray: \{", r"^in-process: \{", r"^training (baseline|augmented)", r"^\[(baseline|augmented)\] ",
    r"^evaluate: ", r"^stress: ", r"^  \[\d+/\d+\] \S+ done \(\d+ s\)$", r"^augmented - baseline: ", r"^figures: \d+ written",
    r"^report: ", r"^(baseline|augmented): test_acc ", r"^run folder: ", r"^resuming ", r"^waiting up to ", r"^nodes are there",
    r"^sweep: ", r"^sweep finished", r"^augmented - baseline \w+: ", r"^interrupted",
    r"^slices: ", r"^label audit( skipped)?: ", r"^train-label audit: ", r"^\[fold\d+\] ", r"^disk: ", r"^fourier: ", r"^texture: ", r"^attack: ", r"^browser: ",
    r"^\S+\.npz: (saved under other options|unreadable saved shard)", r"^\S+: \d+ saved tasks \(",  # saved shards a resume refuses
)]
# Lines of other processes that a run's log may hold, each with what it means (README, "What a run's log holds").
EXPLAINED = {
    "ray job logs: its server address": (re.compile(r"INFO cli\.py:\d+ -- Job submission server address: "),
                                          "the `ray job logs` client says which server it asked"),
    "job manager: runtime env": (re.compile(r"INFO job_manager\.py:\d+ -- Runtime env is setting up\."),
                                 "Ray unpacks the uploaded working dir before the job starts"),
    "job manager: entrypoint": (re.compile(r"^Running entrypoint for job "), "the command Ray runs for the job"),
    "PreemptionWatcher, one per trainer": (re.compile(r"core_worker\.cc:\d+: Actor with class name: 'PreemptionWatcher'"),
                                           "Ray Train's spot-preemption watcher; kept on clusters (spot GPU nodes), harmless"),
    "raylet: disk nearly full": (re.compile(r"^\(raylet\) .*file_system_monitor\.cc:\d+: .* is over \d+% full"),
                                 "the node's disk is over Ray's spill threshold; Ray repeats this every 10 s"),
    "raylet: worker processes": (re.compile(r"^\(raylet\) WARNING: \d+ PYTHON worker processes have been started on node"),
                                 "more worker processes than CPUs on a small node: the 0-CPU trainer tasks and their controllers"),
    "placement-group cleaner: abseil lock trace": (re.compile(r"^\[mutex\.cc : \d+\] RAW: (Lock blocking|Lock returning|Unlock) 0x[0-9a-f]+ "),
                                                   "Ray's C++ core traces one lock as Ray Train's cleaner actor ends; the run goes on"),
}


def sort_lines(text: str) -> tuple[Counter, Counter, list[str]]:
    own, explained, unexplained = Counter(), Counter(), []
    for raw in text.splitlines():
        line = SEED_TAG.sub("", RAY_PREFIX.sub("", ANSI.sub("", raw))).rstrip()
        if not line.strip():
            continue
        hit = next((p.pattern for p in OWN if p.search(line)), None)
        if hit:
            own[hit] += 1
            continue
        reason = next((name for name, (pattern, _) in EXPLAINED.items() if pattern.search(line)), None)
        if reason:
            explained[reason] += 1
        else:
            unexplained.append(line)
    return own, explained, unexplained
