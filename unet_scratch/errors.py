"""The one exception type for problems the user can fix (bad data, flags or files).

Library code raises :class:`UserError` with a one-line message that names the file or flag
and the fix; only the CLIs catch it, print the line to stderr and exit with status 2.
"""


class UserError(Exception):
    """A user-fixable problem; ``str(e)`` is the whole message."""
