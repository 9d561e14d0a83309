"""`stress run`: train both variants (or take yours with --evaluate) and stress-test them.

This script is what `ray job submit -- python jobs/stress_test.py ...` runs from a checkout; it takes the
same options and prints the same output as `stress run` (see stress/commands.py).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from stress.commands import job_main  # noqa: E402

if __name__ == "__main__":
    job_main("run")
