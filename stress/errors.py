"""The one exception type for problems the user can fix (bad input, bad options)."""


class StressError(Exception):
    """A user-facing error: jobs print `error: <message>` on one line and exit non-zero."""


class Interrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM during a run; the message says what the run folder holds (jobs exit 130)."""
