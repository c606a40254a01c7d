"""User-facing errors.

Anything derived from ReproError is shown to the user as its message alone (no
traceback) and exits with status 2: these are problems with the input or the
machine that the user can fix, not bugs in repro.
"""


class ReproError(Exception):
    """An error whose message is meant for the user, as is."""
