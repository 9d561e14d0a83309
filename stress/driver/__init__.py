"""The stages in order, and the only package that imports Ray.

cluster.py: Ray Train, tasks, Tune, RayExecutor; connection.py: starting or joining Ray; resources.py: whether
requests can be granted; fanout.py: resumable fan-out and the in-process executor;
stages.py: the train, evaluate and stress stages; pipeline.py: one seed's run folder, stage
by stage; sweep.py: seeds through Ray Tune and the sweep summary.

Importing this package sets two defaults of how a Ray driver prints its workers' lines (a value
already in the environment wins):
- RAY_DEDUP_LOGS=0. Ray folds lines from different workers that differ only in words with digits
  ("[fold1] epoch 1/2 …" and "[fold2] epoch 1/2 …", or the same variant's epochs in two seeds'
  trials) into one "… [repeated 2x across cluster]" line, and holds the later ones back until
  another line of that shape comes, which may be after the job's last line. Ray reads it into a
  module constant when `ray` is first imported; nothing in stress imports Ray before this, and
  where the caller did (a notebook's `import ray` first), the constants Ray already read are set too.
- RAY_COLOR_PREFIX=0 where stdout is not a terminal: no ANSI colour codes around a forwarded
  line's "(RayTrainWorker pid=…)" prefix in a log file. Ray reads it for every line.
"""

import os
import sys

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
if os.environ["RAY_DEDUP_LOGS"] == "0":
    # Ray was imported first and read the default (fold) into its constants; its log printer reads
    # ray_logging's copy on every batch (Ray 2.60, pinned).
    for _module in ("ray._private.ray_constants", "ray._private.ray_logging"):
        if _module in sys.modules and getattr(sys.modules[_module], "RAY_DEDUP_LOGS", False):
            sys.modules[_module].RAY_DEDUP_LOGS = False
if not (hasattr(sys.stdout, "isatty") and sys.stdout.isatty()):
    os.environ.setdefault("RAY_COLOR_PREFIX", "0")
