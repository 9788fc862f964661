"""``edgecnn report RUN_DIR``: render a run's results document into one self-contained HTML page.

Works for any run folder an edgecnn command wrote (``demo``, ``train``,
``explain``, ``compress``, ``search``, or an ``analyze --json`` file): see
:mod:`edgecnn.report`. The document is untrusted (run folders are shared): a
file too large or too deeply nested is refused in one line (exit 2); a
malformed section is left out of the page with a note there and a warning
line here, and the page is still written (exit 0).
"""

from __future__ import annotations

import argparse
import sys

from edgecnn.report import write_report


def cmd_report(args: argparse.Namespace) -> int:
    """Write the page; print one warning line per section left out, then where the page is."""
    notes: list[str] = []
    path = write_report(args.run, args.out, notes=notes)
    for note in notes:
        print(f"edgecnn report: warning: {note}", file=sys.stderr)
    print(f"wrote {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="render a run folder's results.json into one self-contained HTML page",
                       description="Render the results document of a run (demo, train, explain, analyze, ...) "
                       "into one HTML file with every figure inlined.")  # fmt: skip
    p.add_argument("run", metavar="RUN_DIR", help="a run folder holding results.json, or a results file")
    p.add_argument("--out", default=None, help="HTML file to write (default: report.html in the run folder)")
    p.set_defaults(func=cmd_report)
