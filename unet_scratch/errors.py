"""The one exception type for problems the user can fix (bad data, flags or files).

Library code raises :class:`UserError` with a one-line message that names the file or flag
and the fix; only the CLIs catch it, print the line to stderr and exit with status 2.
"""

import argparse
import difflib
import os
import select
import signal
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn


class UserError(Exception):
    """A user-fixable problem; ``str(e)`` is the whole message."""


def listed(items: Sequence[object], most: int = 3) -> str:
    """The first ``most`` of ``items`` for a one-line message, joined by commas, and ", ..." after
    them where there are more: ``a, b, c, ...`` (every message that names "some of" uses it)."""
    shown = ", ".join(map(str, items[:most]))
    return f"{shown}, ..." if len(items) > most else shown


class MissingExtra(UserError):
    """An optional dependency (an extra such as ``[plot]``) is not installed: a caller for which
    that part is a side dish (evaluate.py's ``--curves``) warns and goes on."""


class WriteFailed(UserError):
    """A file could not be written (a full disk, no permission): a problem of where the outputs
    go, not of one input, so a caller that skips a bad input and goes on stops at this one."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` after a flag's help, except where there is nothing to show
    (an empty or unset default, an off switch): the help text says what happens then."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, "", False) or action.default is argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action)


def _expand_home(value: object) -> object:
    """``~/x`` -> ``/home/me/x`` in a string or a list of them; anything else as it is."""
    if isinstance(value, str) and value.startswith("~"):
        return os.path.expanduser(value)
    if isinstance(value, list):
        return [_expand_home(v) for v in value]
    return value


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error (``prog: error: ... (see --help)``) and exit status 2,
    :class:`HelpFormatter` unless told otherwise, and ``~`` expanded in every value: the shell
    leaves ``--out=~/runs`` and ``"~/runs"`` as they are, and a folder named ``~`` in the
    working directory is one ``rm -rf ~`` away from deleting the user's home."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_known_args(  # type: ignore[override]
        self, args: list[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        self._given = list(sys.argv[1:] if args is None else args)  # for error(): the flags typed
        parsed, extra = super().parse_known_args(args, namespace)
        for name, value in vars(parsed).items():
            setattr(parsed, name, _expand_home(value))
        return parsed, extra

    def error(self, message: str) -> NoReturn:
        unknown = self._unknown_flags()
        if unknown and "required" in message:  # `--runn x`: the required --run reads as missing,
            message = f"unrecognized arguments: {' '.join(unknown)}"  # but the typo is what to fix
        print(f"{self.prog}: error: {message}{self._closest_flag(message)} (see --help)", file=sys.stderr)
        sys.exit(2)

    def _unknown_flags(self) -> list[str]:
        """The ``--flags`` typed that are none of this parser's, nor the start of one (argparse
        takes ``--thresh`` for ``--threshold``)."""
        given = getattr(self, "_given", [])
        given = given[: given.index("--")] if "--" in given else given  # after "--": positionals
        flags = [a.split("=", 1)[0] for a in given if a.startswith("--")]
        known = [f for f in self._option_string_actions if f.startswith("--")]
        return [f for f in flags if not any(k.startswith(f) for k in known)]

    def _closest_flag(self, message: str) -> str:
        """``; did you mean --input-size?`` for an unknown ``--input_size`` or ``--ouput``, else ""."""
        prefix = "unrecognized arguments: "
        if not message.startswith(prefix):
            return ""
        # the names without their "--": the shared prefix would make --data look like --tta
        names = [f[2:] for f in self._option_string_actions if f.startswith("--")]
        for arg in message[len(prefix) :].split():
            if arg.startswith("--"):
                given = arg[2:].split("=", 1)[0]
                close = difflib.get_close_matches(given, names, n=1, cutoff=0.7)
                # else the longest flag the given one starts with: --output, --out-dir for --out
                prefixes = [n for n in names if given.startswith(n)]
                match = close[0] if close else max(prefixes, key=len, default="")
                if match:
                    return f"; did you mean --{match}?"
        return ""


INTERRUPTED = 130  # the status of a command stopped by Ctrl-C: 128 + SIGINT
BROKEN_PIPE = 141  # of one whose reader stopped reading (`| head`): 128 + SIGPIPE, as a shell reports


def _to_devnull(stream: object) -> None:
    """Point ``stream``'s file descriptor at /dev/null: its reader is gone, and the flush Python
    does at exit would otherwise print a second error."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())


def reader_gone() -> bool:
    """Whether the reader of this process's stdout or stderr (file descriptors 1 and 2) has gone
    (``| head`` has read its lines): a pipe whose read end is closed polls as an error. A
    BrokenPipeError with both still read is another pipe's (a socket, a worker process): a real
    error, not the end of the output. True where poll() cannot tell (Windows)."""
    try:
        poller = select.poll()
        for fd in (1, 2):
            poller.register(fd, select.POLLOUT)
        return any(event & (select.POLLERR | select.POLLHUP) for _, event in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll(); a closed descriptor
        return True


def exit_with(status: int) -> NoReturn:
    """``sys.exit(status)`` for a command's ``__main__``, except that a command stopped by Ctrl-C
    (:data:`INTERRUPTED`) ends as shells expect of one: killed by SIGINT once its line is
    printed, so that a script or loop running it stops too. A plain exit with 130 would let
    ``for f in ...; do python predict.py ...; done`` go on to the next command."""
    if status == BROKEN_PIPE:
        # the reader is gone: the flush Python does at exit would print "Exception ignored ...".
        # Here, at the process's own exit, not in exit_status: a caller of main() in the same
        # process (a test, a notebook) keeps its stdout
        _to_devnull(sys.stdout)
    if status == INTERRUPTED:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # `train.py | tee log`: the reader died of the same Ctrl-C
                _to_devnull(stream)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    sys.exit(status)


def exit_status(
    run: Callable[[], int], interrupted: str = "the files written so far are complete", say: bool = True
) -> int:
    """``run()``'s status; a :class:`UserError` becomes one line on stderr and status 2 (the CLI
    edge). Ctrl-C is one line (what is kept: ``interrupted``, or the message of a KeyboardInterrupt
    raised again with one) and status 130, and a reader that
    stops reading (``| head``) ends the command quietly with status 141, as for any Unix tool, not
    with a traceback: every file is written atomically, so what was written is whole and nothing
    half-written is left. ``say=False`` (a torchrun worker but rank 0) prints neither line."""
    try:
        return run()
    except UserError as e:
        if say:
            print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # one raised again with a message says what is kept
        if say:
            print(f"\ninterrupted: {str(e) or interrupted}", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:
        if not reader_gone():
            raise
        return BROKEN_PIPE
