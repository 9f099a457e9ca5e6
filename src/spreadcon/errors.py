"""The user-error type of the command line.

`spreadcon.cli.main` prints a user error as one line, `spreadcon COMMAND: error: MESSAGE`, and
exits with code 2 (no traceback; `--debug` shows it). User errors are `UserError`, `ValueError`,
`OSError` (`FileNotFoundError`, `PermissionError`, a full disk) and `MemoryError` (refused before a
large allocation): each message names the file, key or value at fault and what to do. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input from the user (an option, a file, a run folder): a one-line message, exit 2.

    A ValueError, so library callers that catch ValueError keep working."""


USER_ERRORS: tuple[type[BaseException], ...] = (UserError, ValueError, OSError, MemoryError)


def describe(err: BaseException) -> str:
    """One line for a user error; an OSError names its file ("No such file or directory: 'x'")."""
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        return f"{err.strerror}: {str(err.filename)!r}"
    text = str(err).strip() or type(err).__name__
    return " ".join(text.split())  # one line, even for multi-line messages
