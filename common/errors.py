"""The one base class of user mistakes.

A `UserError` is something the user can fix (a flag, a file, a record, a checkpoint of
another model): entry points report it as `error: <message>` in one line, naming the
file, line or flag, and exit 1 (common.cli.run_main). Anything else is a bug in the
project and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in the input or the command line, reported in one line."""
