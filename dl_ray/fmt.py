"""Numbers and tables that read in any terminal (80 columns and up).

``num`` writes a number with a fixed count of significant figures, switching to scientific form where fixed form
would hide the magnitude (``1.1e-04`` and ``3.2e-03`` instead of ``0.000…`` and ``0.003…``). ``fit_table`` builds a
rich Table whose values are never cut: headers break at ``/`` or ``_`` and, when the table is still too wide, whole
columns are dropped (and named) instead.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Sequence

from rich.table import Table

SMALL = 1e-2  # below this, fixed form spends its width on zeros: 0.00320 reads better as 3.2e-03
LARGE = 1e5   # from here on, digits are hard to count: 2.5e+06 reads better than 2500000
# Per-column cost of rich's default box: one border character and one space of padding on each side.
COLUMN_OVERHEAD = 3


def num(x, sig: int = 3) -> str:
    """``x`` with ``sig`` significant figures: ``0.975``, ``1.34``, ``3.2e-03``, ``2.5e+06``; integers below 1e5 whole.

    Trailing zeros are dropped (``0.01``, not ``0.0100``). None prints as ``-``, booleans and strings as themselves.
    """
    if x is None:
        return "-"
    if isinstance(x, (list, tuple)):  # a swept list field, e.g. model.hidden=[16, 8]
        return "[" + ", ".join(num(v, sig) for v in x) + "]"
    if isinstance(x, (bool, str)):
        return str(x)
    if isinstance(x, int) and abs(x) < LARGE:
        return str(x)
    try:
        x = float(x)  # numpy and 0-d torch scalars too
    except (TypeError, ValueError):  # anything else a field can hold (a dict, None-like)
        return str(x)
    if not math.isfinite(x):
        return str(x)
    if x == 0:
        return "0"
    if abs(x) < SMALL or abs(x) >= LARGE:
        mantissa, exponent = f"{x:.{sig - 1}e}".split("e")
        return f"{_strip(mantissa)}e{exponent}"
    digits_before_point = math.floor(math.log10(abs(x))) + 1
    decimals = max(sig - digits_before_point, 0)
    return _strip(f"{x:.{decimals}f}")  # a number wider than sig digits (12346) stays whole below LARGE


def count(n: float) -> str:
    """A count in at most 5 characters, for progress lines: ``9,999``, ``25.9k``, ``2.00M``."""
    n = float(n)
    if abs(n) < 10_000:
        return f"{n:,.0f}"
    if abs(n) < 999_500:
        return f"{n / 1e3:.1f}k" if abs(n) < 99_950 else f"{n / 1e3:.0f}k"
    return f"{n / 1e6:.2f}M" if abs(n) < 9.995e6 else f"{n / 1e6:.1f}M"


def pct(fraction: float, decimals: int = 1) -> str:
    """A fraction as a percentage of fixed width (``  9.9 %``, `` 10.0 %``, ``100.0 %``), so columns never shift."""
    return f"{100 * fraction:{4 + decimals}.{decimals}f} %"


def fixed(x, decimals: int = 4) -> str:
    """``decimals`` places where that shows the value (``0.9970``, ``12.3456``), else :func:`num` (``4.1e-04``).

    For columns of comparable values, which read best with one number of decimals."""
    if x is None:
        return "-"
    x = float(x)
    if math.isfinite(x) and (x == 0 or 10 ** -(decimals - 1) <= abs(x) < 1e4):
        return f"{x:.{decimals}f}"
    return num(x)


def _strip(text: str) -> str:
    return text.rstrip("0").rstrip(".") if "." in text else text


def header_width(name: str) -> int:
    """The narrowest a header can be when it breaks after ``/``, ``_``, ``.``, ``-`` or spaces."""
    return max(len(part) for part in _header_parts(name))


def _header_parts(name: str) -> list[str]:
    return [p for p in re.split(r"(?<=[/_.\- ])", name) if p]


def _header(name: str, width: int) -> str:
    """``name`` broken into lines of at most ``width`` characters: at spaces, and inside a word only at its
    separators when the word is wider than ``width``."""
    parts = [piece for word in re.split(r"(?<= )", name)
             for piece in ([word] if len(word.rstrip()) <= width else _header_parts(word))]
    lines: list[str] = []
    for part in parts:
        if lines and len(lines[-1]) + len(part) <= width:
            lines[-1] += part
        else:
            lines.append(part)
    return "\n".join(line.rstrip() for line in lines)


def fit_table(columns: Sequence[str], rows: Sequence[Sequence[str]], width: int, *, title: str | None = None,
              keep: int = 1, drop_order: Sequence[str] | None = None,
              right: Sequence[str] = ()) -> tuple[Table, list[str]]:
    """A table of ``rows`` (already formatted strings) no wider than ``width``, and the names of dropped columns.

    Every value is shown whole: a column is as wide as its widest value, headers break at separators to fit it, and
    when that is still too wide, columns go in ``drop_order`` (default: from the right, never the first ``keep``).
    Columns named in ``right`` are right-aligned (numbers).
    """
    names = list(columns)
    values = {c: max([0] + [len(str(r[i])) for r in rows]) for i, c in enumerate(names)}
    order = list(drop_order) if drop_order is not None else names[keep:][::-1]
    dropped: list[str] = []
    widths = _break_headers(names, values, width)
    while _table_width(list(widths.values())) > width and order:
        gone = order.pop(0)
        if gone in names:
            names.remove(gone)
            dropped.append(gone)
            widths = _break_headers(names, values, width)
    table = Table(title=title)
    for c in names:
        table.add_column(_header(c, widths[c]), justify="right" if c in right else "left", no_wrap=True,
                         min_width=widths[c])
    index = [list(columns).index(c) for c in names]
    for r in rows:
        table.add_row(*(str(r[i]) for i in index))
    return table, dropped


def _break_headers(names: list[str], values: dict[str, int], width: int) -> dict[str, int]:
    """Column widths: whole headers where they fit, broken (the most saving first) only until the table fits."""
    widths = {c: max(len(c), values[c]) for c in names}
    for c in sorted(names, key=lambda c: widths[c] - max(header_width(c), values[c]), reverse=True):
        if _table_width(list(widths.values())) <= width:
            break
        widths[c] = max(header_width(c), values[c])
    return widths


def _table_width(widths: Sequence[int]) -> int:
    return sum(widths) + COLUMN_OVERHEAD * len(widths) + 1


def shown_path(path: str | Path) -> str:
    """``path`` relative to the current folder when it lies inside it (``runs/mnist_lenet``), else absolute."""
    path = Path(path).absolute()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def file_lines(label: str, paths: Sequence[str | Path], width: int = 80) -> list[str]:
    """``label: a.png, b.png`` on one line when it fits; else ``label in FOLDER/:`` and the file names on the lines
    below, two spaces apart, indented, never split (a path is copied whole or not at all)."""
    shown = [shown_path(p) for p in paths]
    one = f"{label}: {', '.join(shown)}"
    if len(one) <= width or not shown:
        return [one]
    folders = {os.path.dirname(p) for p in shown}
    if len(folders) == 1:
        head, items = f"{label} in {folders.pop()}{os.sep}:", [os.path.basename(p) for p in shown]
    else:
        head, items = f"{label}:", shown
    lines = [head, ""]
    for item in items:
        if lines[-1] and len(lines[-1]) + 2 + len(item) > width:
            lines.append("")
        lines[-1] += "  " + item
    return lines
