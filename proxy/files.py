"""Files only the user can read: journals hold every prompt, logs hold request details.

Modes are set explicitly, not left to the umask (a usual 022 would make them world-readable):
directories 0700, files 0600. A file or directory that already exists is tightened when it
is ours to tighten (`private_dir(..., tighten=True)`, every file opened here); a directory the
user chose and that others can read is left alone and reported, since it may be a shared
place such as a project folder.
"""

from __future__ import annotations

import contextlib
import os
import stat
from io import TextIOWrapper
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path, *, tighten: bool) -> str | None:
    """Create `path` (and its parents) with mode 0700. When it already exists and others may
    read it: made 0700 with `tighten`, else a warning to show the user (None: nothing to say).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=DIR_MODE)
        created = True
    except FileExistsError:
        created = False
    info = path.stat()
    if not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(f"{path} is not a directory")
    mode = stat.S_IMODE(info.st_mode)
    if mode != DIR_MODE and (created or tighten):
        with contextlib.suppress(PermissionError):  # another user's directory: a warning
            path.chmod(DIR_MODE)  # (a new one: mkdir's mode went through the umask)
            return None
    if mode & 0o077:
        return (
            f"{path} can be listed by other users (mode {mode:04o}); the files written in it "
            f"are private (0600), but `chmod 700 {path}` hides their names too"
        )
    return None


def open_private(
    path: Path, encoding: str | None = "utf-8", errors: str | None = None
) -> TextIOWrapper:
    """`path` opened for appending text, mode 0600 whatever the umask; an existing file is
    tightened to 0600 (it was written by an older version, or by hand)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, FILE_MODE)
    try:
        info = os.fstat(fd)
        # Only a regular file: `--log-file /dev/stderr` is a terminal or a pipe, not ours.
        if stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) != FILE_MODE:
            with contextlib.suppress(PermissionError):  # another user's file: theirs to set
                os.fchmod(fd, FILE_MODE)
        return open(fd, "a", encoding=encoding, errors=errors)
    except BaseException:
        os.close(fd)
        raise
