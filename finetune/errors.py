"""The one exception type users see.

Anything the user can fix (a path, a column, a flag) raises `UserError` with a message that
names the file, row, column or option and says what to do. The CLI prints it on one line
and exits with status 2 instead of showing a library traceback.
"""


class UserError(Exception):
    """A problem with the user's input or environment, explained in plain words."""
