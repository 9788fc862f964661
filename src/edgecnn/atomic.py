"""Atomic file writes: a temporary file in the target's folder, flushed to disk, then ``os.replace``.

A crash or a Ctrl-C leaves the old file or the new one, never half of one.
Every file edgecnn writes to be read back later — checkpoints, latency
tables, decoded data caches, reports — goes through :func:`atomic_write`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], object], *, mode: int = 0o644) -> Path:
    """Call ``write(f)`` on a temporary binary file next to ``path``, then move it into place.

    ``mode`` replaces the owner-only permissions of the temporary file: what
    edgecnn writes (a checkpoint, a table, a report) is meant to be shared.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def atomic_write_text(path: str | os.PathLike[str], text: str, *, mode: int = 0o644) -> Path:
    """:func:`atomic_write` of a UTF-8 text."""
    data = text.encode("utf-8")
    return atomic_write(path, lambda f: f.write(data), mode=mode)
