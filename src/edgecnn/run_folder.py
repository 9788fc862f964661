"""Where a command writes: checked before the work starts, and never over a previous run unasked.

Two rules, for every command that writes files:

1. **Found early.** :func:`check_writable` proves, before any data is loaded or
   any epoch is trained, that a file can be created where the output goes (it
   creates and removes a temporary file there): an unwritable ``--out``, a
   read-only file system or a path through a regular file is a one-line error
   at once, not after an epoch.
2. **Nothing lost.** :func:`claim_run_dir` refuses a run folder that already
   holds a previous run's results (``last.pt``, or a demo's ``model.pt`` /
   ``results.json``) unless the caller says what to do with them: ``resume``
   (continue it) or ``overwrite`` (replace it). A re-run with fewer epochs can
   no longer replace a longer run's checkpoint.

A single output file the user names explicitly (``--json FILE``,
``--markdown FILE``) is replaced — that is what naming it asks for — but
atomically (:mod:`edgecnn.atomic`), so a failed write keeps the old one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from edgecnn.atomic import clean_stale


def check_writable(path: str | os.PathLike[str], *, what: str, is_dir: bool = False) -> Path:
    """``OSError`` naming ``what`` unless a file can be created at ``path`` (a folder when ``is_dir``).

    Nothing is left behind: folders that do not exist yet are not created,
    the probe goes into the nearest existing ancestor instead.
    """
    p = Path(path)
    if is_dir and p.exists() and not p.is_dir():
        raise NotADirectoryError(f"{what} {p} is a file, not a folder; pass a folder")
    if not is_dir and p.is_dir():
        raise IsADirectoryError(f"{what} {p} is a folder; pass a file name")
    folder = p if is_dir else p.parent
    probe = folder
    while not probe.exists():  # the folders to be created: test the nearest one that exists
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise NotADirectoryError(f"{what} {p} cannot be created: {probe} is a file, not a folder")
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".edgecnn-probe.", suffix=".tmp")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise OSError(exc.errno, f"{what} {p} is not writable ({exc.strerror or exc}); choose another path") from None
    return p


RUN_FILES = ("last.pt", "model.pt", "results.json")  # what makes a folder hold a previous run


def claim_run_dir(out: str | os.PathLike[str], *, resume: bool = False, overwrite: bool = False,
                  flag: str = "--out", resumable: bool = True) -> Path:  # fmt: skip
    """Check that ``out`` may be used as a run folder; clean stale temporaries of a killed write in it.

    A folder with a previous run's files is refused unless ``resume`` (its
    ``last.pt`` is continued) or ``overwrite`` (its files are replaced).
    ``resume`` needs that previous run. ``resumable=False``: the command has
    no ``--resume``, and the refusal does not offer it.
    """
    p = check_writable(out, what=f"run folder ({flag})", is_dir=True)
    if resume and overwrite:
        raise ValueError("--resume continues the run in the folder, --overwrite replaces it: pass one of them")
    found = [name for name in RUN_FILES if (p / name).is_file()]
    if found and not resume and not overwrite:
        offer = "pass --resume to continue it, --overwrite to replace it" if resumable else "pass --overwrite to replace it"
        raise FileExistsError(f"{p} already holds a previous run ({', '.join(found)}); {offer}, or another {flag}")
    if p.is_dir():
        clean_stale(p)
    return p
