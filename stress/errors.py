"""The one exception type for problems the user can fix (bad input, bad options)."""


class StressError(Exception):
    """A user-facing error: jobs print `error: <message>` on one line and exit non-zero."""
