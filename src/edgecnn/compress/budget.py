"""Resource budgets for compression: ``5ms``, ``50%latency``, ``50%macs``, ``1.2Mparams`` (SPEC §5).

A budget names one resource — ``latency`` (ms on a backend), ``macs`` (per
image) or ``params`` — and a bound on it, either absolute (``5ms``,
``300Mmacs``, ``1.2Mparams``) or relative to the model before compression
(``50%latency``: at most half of its latency). :func:`parse_budget` reads the
string, with a ``ValueError`` that names the mistake and shows the valid forms;
:meth:`Budget.target` turns it into a number once the starting value is known.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

RESOURCES: tuple[str, ...] = ("latency", "macs", "params")
_SUFFIX = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9}
_FORMS = "'5ms', '50%latency', '50%macs', '50%params', '300Mmacs', '1.2Mparams'"
_ABS = re.compile(r"(?P<num>\d+(?:\.\d*)?|\.\d+)\s*(?P<mult>[kKMG]?)\s*(?P<unit>ms|macs|params)\Z")
_REL = re.compile(r"(?P<num>\d+(?:\.\d*)?|\.\d+)\s*%\s*(?P<unit>latency|macs|params)\Z")


@dataclass(frozen=True)
class Budget:
    """At most ``value`` of ``resource`` (a fraction of the start when ``relative``)."""

    resource: str  # "latency" (ms), "macs" (per image) or "params"
    value: float  # the bound: ms / count, or a fraction in (0, 1) when relative
    relative: bool  # value is a fraction of the model's own resource before compression
    text: str  # the string it was parsed from

    def target(self, start: float) -> float:
        """The absolute bound for a model whose resource is ``start`` now."""
        return self.value * start if self.relative else self.value

    def to_dict(self) -> dict[str, object]:
        return {"text": self.text, "resource": self.resource, "value": self.value, "relative": self.relative}


def parse_budget(text: str) -> Budget:
    """``'50%latency'`` → ``Budget('latency', 0.5, relative=True)``; a ValueError naming the problem otherwise."""
    s = str(text).strip()
    m = _REL.match(s)
    if m:
        pct = float(m["num"])
        if not 0 < pct < 100:
            raise ValueError(f"budget {text!r}: a relative budget is a percentage in (0, 100), e.g. '50%{m['unit']}'")
        return Budget(m["unit"], pct / 100.0, True, s)
    m = _ABS.match(s)
    if m:
        unit = {"ms": "latency"}.get(m["unit"], m["unit"])
        if unit == "latency" and m["mult"]:
            raise ValueError(f"budget {text!r}: latency is given in plain milliseconds, e.g. '5ms'")
        value = float(m["num"]) * _SUFFIX[m["mult"]]
        if value <= 0:
            raise ValueError(f"budget {text!r} must be positive")
        return Budget(unit, value, False, s)
    raise ValueError(f"budget {text!r} is not understood; write it as one of {_FORMS}")
