"""Writing outputs: folders checked before any work, files written whole or not at all.

Every file the project writes (checkpoints, config.json, metrics.csv, masks, overlays, pictures,
exports, JSON reports) goes through :func:`atomic_write_bytes`: a reader sees the old file or
the new one, never half of one, even after a kill -9. A path that cannot be written (one of its
folders is a file, the path is a folder, the disk is full) is a :class:`UserError` naming the
path and the fix, not a traceback. Torch-free, so the table and picture code can use it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from .errors import UserError


def _file_in_the_way(path: Path) -> Path | None:
    """The first of ``path``'s folders (from the root down), or ``path`` itself, that exists but
    is not a folder, so that nothing can be made below it; None when there is none."""
    for p in [*reversed(path.parents), path]:
        if not p.exists():
            return None  # nothing below a missing folder exists either
        if not p.is_dir():
            return p
    return None


def _refuse_a_file_in_the_way(folder: Path, named: Path, flag: str) -> None:
    blocker = _file_in_the_way(folder)
    if blocker is not None:
        raise UserError(f"{flag} {named}: {blocker} is a file, not a folder: choose another {flag}")


def check_folder(path: str | Path, flag: str) -> Path:
    """Raise :class:`UserError` unless ``path`` is a folder or can be made one (``flag``: the
    option that named it, for the fix). Makes nothing: call it before the work, so that a
    bad output path stops a command at its start rather than after minutes of it."""
    path = Path(path)
    _refuse_a_file_in_the_way(path, path, flag)
    return path


def check_file(path: str | Path, flag: str) -> Path:
    """Raise :class:`UserError` unless ``path`` can be written as a file: not a folder, and its
    folder exists or can be made (see :func:`check_folder`). Writes nothing."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} {path} is a folder: give a file name")
    _refuse_a_file_in_the_way(path.parent, path, flag)
    return path


def make_folder(path: str | Path, flag: str) -> Path:
    """``mkdir -p path``, or a :class:`UserError` naming it and ``flag`` when it cannot be made."""
    path = check_folder(path, flag)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # no permission, a read-only disk, ...
        raise UserError(f"cannot make the folder {path} ({e.strerror or e}): choose another {flag}") from e
    return path


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any], flag: str = "--out") -> None:
    """Call ``write(f)`` on a temp file beside ``path``, fsync, then rename it over ``path``.

    A write that fails (a full disk, no permission) raises :class:`UserError` naming the file and
    leaves the old file as it was; so does a path that cannot be a file (``flag``: the option that
    chose the path, for the fix).
    """
    path = check_file(path, flag)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:  # disk full, no permission, ...: the previous file is still whole
        kept = f"; the previous {path.name} is kept" if path.exists() else ""
        raise UserError(
            f"cannot write {path} ({e.strerror or e}): free disk space or write elsewhere ({flag}){kept}"
        ) from e
    finally:
        # the temp file may never have been made; failing to remove it must not hide the error above
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def atomic_write_bytes(data: bytes, path: str | Path, flag: str = "--out") -> None:
    """Write ``data`` to ``path`` atomically."""
    atomic_write(path, lambda f: f.write(data), flag)


def atomic_write_json(obj: object, path: str | Path, flag: str = "--out") -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_bytes((json.dumps(obj, indent=2) + "\n").encode(), path, flag)


def save_figure(fig: Any, path: str | Path, flag: str, **savefig: Any) -> Path:
    """Draw a matplotlib figure into ``path`` atomically, in the format its suffix names
    (``.png``, ``.pdf``, ``.svg``, ...; PNG when it has none)."""
    path = Path(path)
    fmt = path.suffix[1:].lower() or "png"
    if fmt not in fig.canvas.get_supported_filetypes():
        raise UserError(f"{flag} {path}: matplotlib cannot write .{fmt} files: end the name in .png")
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, **savefig)
    atomic_write_bytes(buffer.getvalue(), path, flag)
    return path


def save_png(image: Any, path: str | Path, flag: str) -> Path:
    """Write a PIL image into ``path`` as PNG, atomically."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(buffer.getvalue(), path, flag)
    return Path(path)
