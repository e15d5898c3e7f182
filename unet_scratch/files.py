"""Writing outputs: paths checked before any work, files written whole or not at all.

The files a run, a table, a prediction or a picture leaves (checkpoints, config.json,
metrics.csv, masks, overlays, pictures, exports, JSON reports) go through :func:`atomic_write`:
a reader sees the old file or the new one, never half of one, even after a kill -9; files that
belong together (a mask and its overlay) go through :func:`atomic_write_all`: a failed write
leaves all of them as they were. A path that
cannot be written (one of its folders is a file, the path is a folder, a folder is not
writable, the disk is full) is a :class:`UserError` naming the path and the fix, not a
traceback. Needs no torch itself, so the table and picture code can use it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any

from .errors import UserError, WriteFailed

# what matplotlib's Agg backend writes, by suffix: checked before a picture's work, so that
# --curves results.txt stops at the start rather than after the table
FIGURE_FORMATS = ("png", "pdf", "svg", "svgz", "eps", "ps", "jpg", "jpeg", "tif", "tiff", "webp")


def _check_parents(folder: Path, named: Path, flag: str) -> None:
    """Raise :class:`UserError` (about ``named``, the path ``flag`` gave) unless ``folder``
    exists as a writable folder or can be made: walking from the root down, the first part
    that does not exist can be made if its parent is a writable folder."""
    parent = None
    for p in [*reversed(folder.parents), folder]:
        try:
            exists, is_dir = p.exists(), p.is_dir()
        except OSError as e:  # a folder we may not look into
            why = f"cannot look into {p.parent} ({e.strerror})"
            raise UserError(f"{flag} {named}: {why}: choose another {flag}") from e
        if not exists:
            break  # nothing below a missing folder exists either: all of it will be made
        if not is_dir:
            what = f"{flag} {named} is a file" if p == named else f"{flag} {named}: {p} is a file"
            raise UserError(f"{what}, not a folder: choose another {flag}")
        parent = p
    if parent is not None and not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {named}: {parent} is not writable: choose another {flag}")


def _keep_out(folder: Path, named: Path, flag: str, keep_out: Iterable[str | Path]) -> None:
    """Raise :class:`UserError` when ``folder`` (where ``named`` would be written) is one of the
    folders ``keep_out`` (the dataset's Original/ and Ground Truth/), under any spelling."""
    for other in keep_out:
        if folder.is_dir() and Path(other).is_dir() and os.path.samefile(folder, other):
            raise UserError(
                f"{flag} {named} would be written into {other}, which holds the data: choose another {flag}"
            )


def _given(path: str | Path, flag: str, what: str) -> Path:
    """``path`` as a Path; an empty one is refused rather than read as ``Path("")``, which is "."."""
    if not str(path).strip():
        raise UserError(f"{flag} is empty: give {what}")
    return Path(path)


def check_folder(path: str | Path, flag: str, keep_out: Iterable[str | Path] = ()) -> Path:
    """Raise :class:`UserError` unless ``path`` is a folder or can be made one (``flag``: the
    option that named it, for the fix), and none of the folders ``keep_out``. Makes nothing:
    call it before the work, so that a bad output path stops a command at its start rather
    than after minutes of it."""
    path = _given(path, flag, "a folder")
    _check_parents(path, path, flag)
    _keep_out(path, path, flag, keep_out)
    return path


def check_file(
    path: str | Path,
    flag: str,
    figure: bool = False,
    inputs: Iterable[str | Path] = (),
    keep_out: Iterable[str | Path] = (),
) -> Path:
    """Raise :class:`UserError` unless ``path`` can be written as a file: a regular file or
    nothing yet (not a folder, a device or a pipe), in a folder that is writable or can be made
    (see :func:`check_folder`) and is none of ``keep_out`` (``--curves data/Original/1.tif``
    would replace a frame, ``.../999.tif`` add one without a mask), and none of ``inputs``, the
    files the command reads (through a link too: ``--json runs/dice/best.pt`` would replace the
    trained model); ``figure``: also a suffix matplotlib can draw. Writes nothing."""
    path = _given(path, flag, "a file name")
    _check_parents(path.parent, path, flag)  # first: then the folder holding path can be looked into
    _keep_out(path.parent, path, flag, keep_out)
    if path.is_dir():
        raise UserError(f"{flag} {path} is a folder: give a file name")
    if path.exists() and not path.is_file():
        raise UserError(f"{flag} {path} is not a regular file: give a file name")
    if path.exists():  # not one of the inputs, whatever the path's spelling (links, ../, hard links)
        for source in inputs:
            if Path(source).exists() and os.path.samefile(path, source):
                raise UserError(
                    f"{flag} {path} would replace {source}, which this command reads: choose another {flag}"
                )
    fmt = path.suffix[1:].lower() or "png"
    if figure and fmt not in FIGURE_FORMATS:
        raise UserError(f"{flag} {path}: matplotlib cannot write .{fmt} files: end the name in .png")
    return path


def make_folder(path: str | Path, flag: str) -> Path:
    """``mkdir -p path``, or a :class:`UserError` naming it and ``flag`` when it cannot be made."""
    path = check_folder(path, flag)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # no permission, a read-only disk, ...
        raise UserError(f"cannot make the folder {path} ({e.strerror or e}): choose another {flag}") from e
    return path


def _temp_beside(path: Path) -> Path:
    """Where :func:`atomic_write_all` writes ``path`` first: beside it (a rename across disks is
    not atomic), hidden, named by this process. A long name is cut to its first and last 100
    bytes, under the 255-byte limit of most file systems with the rest: its end is kept, so that
    ``NAME_mask.png`` and ``NAME_overlay.png`` of one long NAME still get two temp files."""
    name = path.name
    if len(name.encode()) > 200:
        raw = name.encode()
        name = raw[:100].decode(errors="ignore") + raw[-100:].decode(errors="ignore")
    return path.with_name(f".{name}.{os.getpid()}.tmp")


def atomic_write_all(
    writes: Sequence[tuple[str | Path, Callable[[IO[bytes]], Any]]], flag: str = "--out"
) -> None:
    """Write several files as one: each ``write(f)`` of ``writes`` (``(path, write)`` pairs, in
    order) into a temp file beside its path, fsync, and only once every one is written, rename
    them all into place. So a write that fails (a full disk, no permission) does not leave a new
    mask beside an old overlay, or a video beside an old CSV: it raises :class:`UserError` naming
    the file and leaves all of them as they were; so does a path that cannot be a file (``flag``:
    the option that chose the paths, for the fix). Each file on its own is always whole, old or
    new; the renames follow one another, so a kill in the instant between two of them can still
    leave a group half renamed. A kill -9 while writing leaves the temp files (see
    :func:`stale_temps`).
    """
    paths: list[Path] = []
    for given, _ in writes:
        path = check_file(given, flag)
        # write the file a link points to; the rename would replace the link
        path = path.resolve() if path.is_symlink() else path
        if path in paths:  # the second write would replace the first one's temp file
            raise UserError(f"{given} would be written twice at once (a link to another output?): remove it")
        paths.append(path)
    temps = [_temp_beside(path) for path in paths]
    path, renaming = paths[0], False
    try:
        for path, tmp, (_, write) in zip(paths, temps, writes):
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
        renaming = True
        for path, tmp in zip(paths, temps):
            os.replace(tmp, path)
    except OSError as e:  # disk full, no permission, ...: before the renames, the old files are whole
        kept = [p.name for p in paths if p.exists()] if not renaming else []
        held = f"; the previous {', '.join(kept)} {'is' if len(kept) == 1 else 'are'} kept" if kept else ""
        raise WriteFailed(
            f"cannot write {path} ({e.strerror or e}): free disk space or write elsewhere ({flag}){held}"
        ) from e
    finally:
        for tmp in temps:
            # a temp file may never have been made; failing to remove one must not hide the error above
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any], flag: str = "--out") -> None:
    """Call ``write(f)`` on a temp file beside ``path``, fsync, then rename it over ``path``: a
    reader sees the old file or the new one, never half of one (:func:`atomic_write_all`)."""
    atomic_write_all([(path, write)], flag)


def stale_temps(folder: Path, suffixes: Iterable[str], idle: float = 60.0) -> list[Path]:
    """The temp files in ``folder`` that a write of a file ending in one of ``suffixes`` left when
    its process was killed (kill -9, a power cut: ``.12_mask.png.4711.tmp``, of
    :func:`atomic_write_all`), for the caller to remove: only those whose process no longer runs
    on this machine and that nothing has written for ``idle`` seconds, so that another command
    writing into the same folder keeps its own, also from another machine sharing the folder
    (whose process ids mean nothing here: a video being encoded is written every few frames).
    None on systems without POSIX process ids (Windows)."""
    if os.name != "posix":
        return []
    found = []
    now = time.time()
    for tmp in folder.glob(".*.tmp"):
        name, _, pid = tmp.name[1:-4].rpartition(".")
        if not (pid.isdigit() and name.lower().endswith(tuple(suffixes))):
            continue
        try:
            if now - tmp.stat().st_mtime < idle:
                continue
            os.kill(int(pid), 0)  # signal 0: nothing is sent, only whether the process exists
        except ProcessLookupError:
            found.append(tmp)
        except (PermissionError, OverflowError, FileNotFoundError):  # another user's process; not
            pass  # a pid; renamed or removed since the listing
    return sorted(found)


def atomic_write_bytes(data: bytes, path: str | Path, flag: str = "--out") -> None:
    """Write ``data`` to ``path`` atomically."""
    atomic_write(path, lambda f: f.write(data), flag)


def atomic_write_json(obj: object, path: str | Path, flag: str = "--out") -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_bytes((json.dumps(obj, indent=2) + "\n").encode(), path, flag)


def save_figure(fig: Any, path: str | Path, flag: str, **savefig: Any) -> Path:
    """Draw a matplotlib figure into ``path`` atomically, in the format its suffix names
    (``.png``, ``.pdf``, ``.svg``, ...; PNG when it has none), then close it, also on failure
    (pyplot keeps every open figure alive)."""
    import matplotlib.pyplot as plt  # only callers that drew a figure get here: matplotlib is there

    path = Path(path)
    try:
        check_file(path, flag, figure=True)
        buffer = io.BytesIO()
        fig.savefig(buffer, format=path.suffix[1:].lower() or "png", **savefig)
        atomic_write_bytes(buffer.getvalue(), path, flag)
    finally:
        plt.close(fig)
    return path


def save_png(image: Any, path: str | Path, flag: str) -> Path:
    """Write a PIL image into ``path`` as PNG, atomically."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(buffer.getvalue(), path, flag)
    return Path(path)
