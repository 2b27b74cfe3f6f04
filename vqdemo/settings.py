"""One source for every setting: a config field's default, help, bounds and choices live in its field metadata.

The command line's flags (`add_flags`), the Train page's widgets and URL parsers (`spec`, `parse_text`) and every
config's own checks (`Checked`, the base of every config) are derived from it, so a default, a bound or a choice
is written once, beside the field it belongs to.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Spec:
    """What one config field accepts and how to talk about it. Bounds are inclusive unless marked open."""

    help: str = ""
    label: str = ""            # how a message names the field ("codebook size K"); default: its name
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False      # lo itself is refused (a learning rate of 0)
    hi_open: bool = False
    choices: tuple = ()        # the only values allowed
    flag: str | None = None    # the command line's flag ("--k"); default --field-name; "" for none
    items: int | None = None   # list fields: at most this many values (their bounds are lo, hi)
    below_lo: str = ""         # why a value (a list item) under lo is refused: said instead of the range


def setting(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, **spec: Any) -> Any:
    """A dataclass field whose metadata holds its Spec: `k: int = setting(64, lo=2, hi=65536, help=...)`."""
    return dataclasses.field(default=default, default_factory=factory, metadata={"spec": Spec(**spec)})


def spec(cls: type, name: str) -> Spec:
    return next(f for f in dataclasses.fields(cls) if f.name == name).metadata["spec"]


def default(cls: type, name: str) -> Any:
    """A field's default (a fresh copy for list fields)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def specs(cls: type) -> dict[str, Spec]:
    """Every field of `cls` that carries a Spec, in declaration order."""
    return {f.name: f.metadata["spec"] for f in dataclasses.fields(cls) if "spec" in f.metadata}


def kind_of(cls: type, name: str) -> tuple[str, bool]:
    """(base type, None allowed) from the annotation text: ("int", False) for `int`, ("float", True) for
    `float | None`, ("list", False) for `list[int]` (whose items are ints)."""
    kind = next(f for f in dataclasses.fields(cls) if f.name == name).type   # text where annotations are postponed
    text = (kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))).replace(" ", "")
    optional = "None" in text.split("|")
    base = next(p for p in text.split("|") if p != "None")
    return ("list" if base.startswith("list[") else base), optional


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e20 else f"{x:g}"


def _range(s: Spec) -> str:
    if s.lo is None and s.hi is None:
        return ""
    if s.hi is None:
        return f" {'>' if s.lo_open else '>='} {_num(s.lo)}"
    if s.lo is None:
        return f" {'<' if s.hi_open else '<='} {_num(s.hi)}"
    return f" in {'(' if s.lo_open else '['}{_num(s.lo)}, {_num(s.hi)}{')' if s.hi_open else ']'}"


def describe(cls: type, name: str) -> str:
    """What a field accepts, in words: "an integer in [2, 65536]", "one of 'ema', 'grad'"."""
    s, (base, optional) = spec(cls, name), kind_of(cls, name)
    if s.choices:
        what = "one of " + ", ".join(repr(c) for c in s.choices)
    elif base == "list":
        what = f"1 to {s.items} integers{_range(s)}" if s.items else f"integers{_range(s)}"
    else:
        what = {"int": "an integer", "float": "a finite number", "bool": "true or false"}.get(base, "text") + _range(s)
    return what + (" (or none)" if optional else "")


def _in_range(s: Spec, value: float) -> bool:
    if s.lo is not None and (value <= s.lo if s.lo_open else value < s.lo):
        return False
    return s.hi is None or (value < s.hi if s.hi_open else value <= s.hi)


def is_int(value: Any) -> bool:
    """A whole number (a numpy one too), never a bool: True is an int to Python but no count, size or seed."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def finite(value: Any) -> float | None:
    """A number read from a file or a browser as a float, or None for anything else (text, a bool, NaN, inf)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def accepts(cls: type, name: str, value: Any) -> bool:
    """Whether the field's type, bounds and choices allow `value` (cross-field rules are the config's own)."""
    s, (base, optional) = spec(cls, name), kind_of(cls, name)
    if value is None:
        return optional
    if base == "bool":
        return isinstance(value, bool)
    if base == "int":
        ok = is_int(value) and _in_range(s, value)
    elif base == "float":
        ok = (is_int(value) or isinstance(value, float)) and math.isfinite(value) and _in_range(s, value)
    elif base == "list":
        ok = (isinstance(value, (list, tuple)) and len(value) >= 1 and (s.items is None or len(value) <= s.items)
              and all(is_int(v) and _in_range(s, v) for v in value))
    else:
        ok = isinstance(value, str)
    return ok and (not s.choices or value in s.choices)


class Checked:
    """The base of every config: it checks itself on construction, and again when `validate()` is called after a
    field was changed in place: first every field against its Spec (`check_fields`), then the rules between
    fields (`rules`). A refusal is one line naming the field, the value and what is allowed."""

    error: type[Exception] = ValueError   # a subclass may raise its module's own error (DataError, PriorError)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        check_fields(self, self.error)
        self.rules()

    def rules(self) -> None:
        """The rules between fields (e.g. one K per depth); none unless a config has some."""


def check_fields(cfg: Any, error: type[Exception] = ValueError) -> None:
    """Refuse the first field whose value its Spec does not allow, in one line naming field, value and range."""
    for name in specs(type(cfg)):
        check_value(type(cfg), name, getattr(cfg, name), error)


def check_value(cls: type, name: str, value: Any, error: type[Exception] = ValueError) -> None:
    """Refuse a value the field `cls.name` does not allow, in one line naming field, value and range: a config's
    own check, and the one check of a live change to a run (`knobs.check`)."""
    if not accepts(cls, name, value):
        s = spec(cls, name)
        label = f"{s.label} ({name})" if s.label else name
        raise error(refusal(cls, name, value) or f"{label} must be {describe(cls, name)}, got {value!r}")


def refusal(cls: type, name: str, value: Any) -> str:
    """The field's own reason for refusing a value under its lower bound ("" when it gives none)."""
    s = spec(cls, name)
    items = value if isinstance(value, list) else [value]
    low = s.below_lo and s.lo is not None and any(isinstance(v, (int, float)) and v < s.lo for v in items)
    return f"{s.label or name} {value!r}: {s.below_lo}" if low else ""


# ---- text -> value: the command line and URLs -------------------------------------------------------------------

def int_list(text: str) -> list[int]:
    """"512, 256,128" -> [512, 256, 128]; what the command line's --ks / --levels and the Train page's K per depth
    take. Raises ValueError in one line."""
    try:
        return [int(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"{text!r}: give comma-separated whole numbers, e.g. 512,256,128") from None


def parse_text(cls: type, name: str, text: str) -> Any:
    """A field's value from text (a flag, a URL parameter), checked against its Spec; ValueError in one line."""
    base, optional = kind_of(cls, name)
    raw = str(text).strip()
    if optional and raw.lower() in ("", "none"):
        return None
    try:
        if base == "bool":
            words = {"on": True, "true": True, "yes": True, "1": True, "off": False, "false": False, "no": False,
                     "0": False}
            if raw.lower() not in words:
                raise ValueError(f"{raw!r}: say on or off")
            value: Any = words[raw.lower()]
        elif base == "int":
            value = int(raw)
        elif base == "float":
            value = float(raw)
        elif base == "list":
            value = int_list(raw)
        else:
            value = raw
    except ValueError as e:
        what = {"int": "an integer", "float": "a number"}.get(base)
        raise ValueError(f"{raw!r} is not {what}" if what else str(e)) from None
    if not accepts(cls, name, value):
        raise ValueError(refusal(cls, name, value) or f"must be {describe(cls, name)}, got {value!r}")
    return value


def flag_name(cls: type, name: str) -> str:
    s = spec(cls, name)
    return s.flag if s.flag is not None else "--" + name.replace("_", "-")


def add_flags(parser: argparse.ArgumentParser, cls: type, names: list[str] | None = None,
              defaults: bool = True) -> None:
    """One command-line flag per field (all of `cls`'s, or `names`): its help, its type check and its default,
    all from the field. With `defaults=False` an unset flag stays None (the config's own default applies)."""
    for name in names or list(specs(cls)):
        s, (base, _) = spec(cls, name), kind_of(cls, name)
        flag = flag_name(cls, name)
        if not flag:
            continue

        def parse(text: str, _name: str = name) -> Any:
            try:
                return parse_text(cls, _name, text)
            except ValueError as e:
                raise argparse.ArgumentTypeError(str(e)) from None
        parse.__name__ = name   # argparse names the type in its message
        value = default(cls, name) if defaults else None
        shown = "" if not defaults or value is None or value is False else " (default on)" if value is True \
            else f" (default {','.join(map(str, value)) if isinstance(value, list) else value})"
        kwargs: dict[str, Any] = {"dest": name, "default": value, "help": (s.help + shown).strip() or None}
        if base == "bool" and value is False:
            kwargs.update(action="store_true")
        else:
            metavar = "on|off" if base == "bool" else flag.lstrip("-").upper().replace("-", "_")
            kwargs.update(type=parse, metavar=metavar)
            if s.choices:
                kwargs.update(choices=list(s.choices), metavar=None)
        parser.add_argument(flag, **kwargs)
