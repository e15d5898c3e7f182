"""The one exception type for problems the user can fix (bad data, flags or files).

Library code raises :class:`UserError` with a one-line message that names the file or flag
and the fix; only the CLIs catch it, print the line to stderr and exit with status 2.
"""

import argparse
import sys
from typing import NoReturn


class UserError(Exception):
    """A user-fixable problem; ``str(e)`` is the whole message."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error (``prog: error: ... (see --help)``) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)
