"""`stress screenshot`: a full-page screenshot of a run's report.html with headless Chromium.

This script is what `ray job submit -- python jobs/screenshot.py ...` runs from a checkout; it takes the
same options and prints the same output as `stress screenshot` (see stress/commands.py).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from stress.commands import job_main  # noqa: E402

if __name__ == "__main__":
    job_main("screenshot")
