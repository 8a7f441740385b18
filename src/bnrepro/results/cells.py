"""How a number is written in a table cell or on a figure, shared by every renderer so one quantity reads
the same everywhere: accuracies in percent, differences in signed percentage points, steps in e6 from
1e5 on, a spread after its mean in the mean's unit. `n/a` where there is no number."""

from __future__ import annotations

import math


def fmt_steps(x: float | None, like: float | None = None) -> str:
    """Steps in e6 from 1e5 on, else in full; `like`: take the unit of that value (a spread takes its
    mean's, so one cell has one unit)."""
    if x is None or math.isnan(x):
        return "n/a"
    return f"{x / 1e6:.2f}e6" if (x if like is None else like) >= 1e5 else f"{x:,.0f}"


def pct(x: float) -> str:
    """An accuracy in percent, one decimal: `80.0%`."""
    return "n/a" if math.isnan(x) else f"{100 * x:.1f}%"


def pm(mean: float, std: float, fmt) -> str:
    """`mean ± std`, each written by `fmt`; the mean alone where there is no spread (one run)."""
    return fmt(mean) + ("" if math.isnan(std) else f" ± {fmt(std)}")


def points(x: float) -> str:
    """An accuracy difference in signed percentage points (+0.5); a reference's own -0.0 is +0.0."""
    return f"{round(100 * x, 1) + 0.0:+.1f}"
