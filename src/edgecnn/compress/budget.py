"""Resource budgets for compression: ``5ms``, ``50%latency``, ``50%macs``, ``1.2Mparams`` (docs/design.md §5).

A budget names one resource — ``latency`` (ms on a backend), ``macs`` (per
image) or ``params`` — and a bound on it, either absolute (``5ms``,
``300Mmacs``, ``1.2Mparams``) or relative to the model before compression
(``50%latency``: at most half of its latency). :func:`parse_budget` reads the
string, with a ``ValueError`` that names the mistake and shows the valid forms;
:meth:`Budget.target` turns it into a number once the starting value is known.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

RESOURCES: tuple[str, ...] = ("latency", "macs", "params")
_SUFFIX = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9}
_FORMS = "'5ms', '50%latency', '50%macs', '50%params', '300Mmacs', '1.2Mparams'"
# a number as anyone might type it (sign, exponent, nan, inf): parsed loosely, then refused with a reason
_NUM = r"(?P<num>[-+]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|(?i:nan|inf(?:inity)?)))"
_ABS = re.compile(_NUM + r"\s*(?P<mult>[kKMG]?)\s*(?P<unit>(?i:ms|macs|params))\Z")
_REL = re.compile(_NUM + r"\s*%\s*(?P<unit>(?i:latency|macs|params))?\Z")
_BARE = re.compile(_NUM + r"\Z")


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
        """The budget as plain data (results documents, NetAdapt's state)."""
        return {"text": self.text, "resource": self.resource, "value": self.value, "relative": self.relative}


def parse_budget(text: str) -> Budget:
    """``'50%latency'`` → ``Budget('latency', 0.5, relative=True)``; a ValueError naming the problem otherwise.

    Refused, each with its reason: a percentage outside (0, 100) (``0%macs``,
    ``150%latency``), a percentage without its resource (``50%``), a bound that
    is not a positive finite number (``-5ms``, ``0ms``, ``nanms``, ``infmacs``),
    a bare number without a unit (``5``), and anything else that is not one of
    the forms.
    """
    s = str(text).strip()
    m = _REL.match(s)
    if m:
        unit = (m["unit"] or "").lower()
        pct = float(m["num"])
        if not 0 < pct < 100:  # false for nan too
            raise ValueError(f"budget {text!r}: a relative budget is a percentage in (0, 100), e.g. "
                             f"'50%{unit or 'latency'}'")  # fmt: skip
        if not unit:
            raise ValueError(f"budget {text!r}: say which resource the percentage is of, e.g. '{m['num']}%latency', "
                             f"'{m['num']}%macs' or '{m['num']}%params'")  # fmt: skip
        return Budget(unit, pct / 100.0, True, s)
    m = _ABS.match(s)
    if m:
        unit = {"ms": "latency"}.get(m["unit"].lower(), m["unit"].lower())
        if unit == "latency" and m["mult"]:
            raise ValueError(f"budget {text!r}: latency is given in plain milliseconds, e.g. '5ms'")
        value = float(m["num"]) * _SUFFIX[m["mult"]]
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"budget {text!r} must be a positive finite number of {m['unit'].lower()}, "
                             f"e.g. {'5ms' if unit == 'latency' else '300M' + unit}")  # fmt: skip
        return Budget(unit, value, False, s)
    if _BARE.match(s) and not math.isfinite(float(s)):
        raise ValueError(f"budget {text!r} is not a finite number; write it as one of {_FORMS}")
    if _BARE.match(s):
        raise ValueError(f"budget {text!r} is not understood: it has no unit; write it as one of {_FORMS}")
    raise ValueError(f"budget {text!r} is not understood; write it as one of {_FORMS}")
