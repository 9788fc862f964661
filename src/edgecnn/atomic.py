"""Atomic file writes: a temporary file in the target's folder, flushed to disk, then ``os.replace``.

A crash or a Ctrl-C leaves the old file or the new one, never half of one.
Every file edgecnn writes to be read back later — checkpoints, latency
tables, decoded data caches, reports, ``--json``/``--markdown`` outputs — goes
through :func:`atomic_write`.

A failed write (a full disk, a read-only file system, a folder that is a file)
raises ``OSError("cannot write <path>: …")`` with the old file untouched; a
``torch.save`` that fails mid-stream (``inline_container.cc … unexpected pos``)
is reported the same way. A process killed mid-write (kill -9, power loss)
leaves its temporary file ``.<name>.<pid>.<random>.tmp`` behind: the next write
of the same target, or :func:`clean_stale` on a run folder, removes the
temporaries whose writer is gone.
"""

from __future__ import annotations

import errno
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

_UNOWNED_AGE_S = 60.0  # a temporary without a pid (older edgecnn) counts as stale after this long


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], object], *, mode: int = 0o644) -> Path:
    """Call ``write(f)`` on a temporary binary file next to ``path``, then move it into place.

    ``mode`` replaces the owner-only permissions of the temporary file: what
    edgecnn writes (a checkpoint, a table, a report) is meant to be shared.
    """
    out = Path(path)
    tmp: str | None = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(out.parent, out.name)
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.{os.getpid()}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, out)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OSError(exc.errno, f"cannot write {out}: {exc.strerror or exc}") from exc
        if isinstance(exc, RuntimeError) and ("inline_container" in str(exc) or "PytorchStreamWriter" in str(exc)):
            raise OSError(errno.EIO, f"cannot write {out}: the write failed part-way (is the disk full?)") from exc
        raise
    return out


def atomic_write_text(path: str | os.PathLike[str], text: str, *, mode: int = 0o644) -> Path:
    """:func:`atomic_write` of a UTF-8 text."""
    data = text.encode("utf-8")
    return atomic_write(path, lambda f: f.write(data), mode=mode)


def clean_stale(folder: str | os.PathLike[str], name: str | None = None) -> list[Path]:
    """Remove temporaries in ``folder`` (of target ``name``, or all) whose writing process is gone.

    A temporary stays while its writer (the pid in its name) runs, so two
    processes writing side by side never delete each other's file. Returns
    what was removed; a folder that cannot be listed is left alone.
    """
    removed: list[Path] = []
    try:
        candidates = list(Path(folder).glob(f".{name}.*.tmp" if name is not None else ".*.tmp"))
    except OSError:
        return removed
    for p in candidates:
        core = p.name[1:-4]  # ".<name>.[<pid>.]<random>.tmp" without the dot and ".tmp"
        if name is not None:
            if not core.startswith(name + "."):
                continue
            core = core[len(name) + 1 :]
        parts = core.rsplit(".", 2)
        pid = int(parts[-2]) if len(parts) >= 2 and parts[-2].isdigit() else None
        try:
            stale = not _alive(pid) if pid is not None else time.time() - p.stat().st_mtime > _UNOWNED_AGE_S
            if stale:
                p.unlink()
                removed.append(p)
        except OSError:
            continue
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True
