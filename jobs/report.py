"""`stress report`: rebuild a run folder's figures and report from its files alone.

This script is what `ray job submit -- python jobs/report.py ...` runs from a checkout; it takes the
same options and prints the same output as `stress report` (see stress/commands.py).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from stress.commands import job_main  # noqa: E402

if __name__ == "__main__":
    job_main("report")
