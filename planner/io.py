"""Writing output files (--json, --report, profiles): whole files or nothing, and only where asked.

`write_output(path, text)` is the one way the CLI writes a file:

- `-`, /dev/stdout and /dev/stderr write through to that stream (a person piping the JSON);
- a new path, or an existing regular file (or a symlink to one: the file it points to is
  replaced, the link is kept), is written atomically: a temp file in the same folder, fsync,
  rename. A reader never sees half a file, and an interrupted write leaves the old one;
- anything else at the path (a directory, a device such as /dev/null or /dev/full, a FIFO, a
  socket) is refused with BadInput before anything is written: renaming over it would replace a
  device node with a regular file (as root, /dev/null itself), which is never what was meant;
- the folder must exist (unless `make_parents`, for the default profiles/ folder): a typo in a
  folder name is an error, not a new tree of folders.

Nothing but the named path (and its temp file, removed on failure) is ever touched.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from pathlib import Path

from planner.errors import BadInput, shown

#: Paths that mean "this process's standard stream", written through rather than replaced.
STREAMS = {"-": "stdout", "/dev/stdout": "stdout", "/dev/stderr": "stderr"}


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def target(path: str | Path, what: str = "output", make_parents: bool = False) -> Path | None:
    """Check that `path` may be written; returns the real file to replace (None for a stream).

    BadInput (naming `what`, e.g. '--json', and the path) when it cannot be: not a regular file,
    its folder missing or not writable. Called early (before minutes of measuring) and again by
    write_output.
    """
    if str(path) in STREAMS:
        return None
    p = Path(path)
    if str(path) == "" or p.name in ("", ".", ".."):
        raise BadInput(f"{what} {shown(str(path))}: not a file name")
    try:
        st = os.stat(p)  # follows symlinks: what matters is what the name points at
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise BadInput(f"{what} {shown(str(p))}: cannot write: {e.strerror or e}") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise BadInput(f"{what} {shown(str(p))}: is {_kind(st.st_mode)}, not a regular file; "
                       f"give a file path (or '-' for stdout)")
    real = Path(os.path.realpath(p)) if p.is_symlink() else p
    parent = real.parent
    if not parent.is_dir():
        if make_parents and not parent.exists():
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise BadInput(f"{what} {shown(str(p))}: cannot create folder {shown(str(parent))}: {e.strerror or e}") from None
        else:
            why = "does not exist" if not parent.exists() else "is not a directory"
            raise BadInput(f"{what} {shown(str(p))}: folder {shown(str(parent))} {why}")
    if not os.access(parent, os.W_OK | os.X_OK) or (st is not None and not os.access(real, os.W_OK)):
        raise BadInput(f"{what} {shown(str(p))}: no write permission")
    return real


def write_output(path: str | Path, text: str, what: str = "output", make_parents: bool = False) -> None:
    """Write `text` to `path` as the module docstring says; BadInput when the path is not writable."""
    real = target(path, what, make_parents)
    if real is None:
        stream = getattr(sys, STREAMS[str(path)])
        stream.write(text)
        stream.flush()
        return
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{real.name}.", suffix=".tmp", dir=real.parent)
    except OSError as e:
        raise BadInput(f"{what} {shown(str(path))}: cannot write: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        try:
            mode = stat.S_IMODE(os.stat(real).st_mode)  # replacing a file keeps its permissions
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask  # mkstemp makes 0600; a report should read like any new file
        os.chmod(tmp, mode)
        os.replace(tmp, real)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):  # disk full, quota: the user's machine, not a bug
            raise BadInput(f"{what} {shown(str(path))}: cannot write: {e.strerror or e}") from None
        raise
