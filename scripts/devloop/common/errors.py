"""Errors a user can act on. The CLI turns them into exit codes; nothing else catches them."""

# Set (to anything): an unexpected error shows its traceback instead of one line (devloop.cli).
DEBUG_ENV = "DEVLOOP_DEBUG"


class DevloopError(Exception):
    """A failure whose message says what to do next. Exit code 1."""

    exit_code = 1


class UsageError(DevloopError):
    """Bad input from the user: an unknown name, an invalid value. Exit code 2, like argparse."""

    exit_code = 2
