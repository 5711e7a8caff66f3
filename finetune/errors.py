"""The one exception type users see.

Anything the user can fix (a path, a column, a flag) raises `UserError` with a message that
names the file, row, column or option and says what to do. The CLI prints it on one line
and exits with status 2 instead of showing a library traceback.
"""


class UserError(Exception):
    """A problem with the user's input or environment, explained in plain words."""


def first_line(error: BaseException) -> str:
    """The first line of a library error's message (its type name when the message is empty):
    the part a user needs, without the traceback or the library's multi-line detail."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
