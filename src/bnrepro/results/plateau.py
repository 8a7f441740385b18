"""Where a run's accuracy curve ends up, from its evaluations: the last fifth of them and the plateau.

The proxy's length and LR-decay scale are chosen (docs/results.md "The Figure 3 proxy": the pilot) so
that every variant's run reaches its plateau, by this criterion (`plateau`): the mean accuracy over the
last fifth of the run's evaluations minus the mean over the fifth before it is below one percentage
point (PLATEAU_CHANGE). A curve still rising by a point or more has not reached its plateau; one that
falls is past its peak and counts as reached. The change is judged as the tables print it, in points to
one decimal (`change_points`): a change of 0.00999999999999995 and one of 0.010000000000000009 both print
"+1.0" and both are not below one point, whatever float rounding left in the last bit. The LR grid (figure3_lr_grid.py) ranks base LRs by the
mean over that same last fifth (`end_of_run`).

A fifth is ceil(n / 5) evaluations of a run that has n, so that a short run still has one; the fifth
before it is the same number of evaluations just before (10 evaluations: the mean of 9-10 minus that of
7-8). Only the evaluations' order counts, not their steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FIFTH = 5  # the last fifth: ceil(n / FIFTH) evaluations
PLATEAU_CHANGE = 0.01  # one percentage point of accuracy
DECIMALS = 1  # a change is printed, and judged, in percentage points to one decimal


def fifth(n: int) -> int:
    """How many evaluations make the last fifth of a run that has `n` (at least one)."""
    return max(1, math.ceil(n / FIFTH))


@dataclass
class EndOfRun:
    mean: float  # mean accuracy over the last fifth of the evaluations
    se: float  # its standard error: sample std (ddof=1) of those evaluations / sqrt(n); 0 for one
    n: int  # how many evaluations that is


def end_of_run(acc) -> EndOfRun:
    """The mean accuracy over the last fifth of the evaluations `acc` (in their order) and its SE."""
    acc = np.asarray(acc, dtype=float)
    if not len(acc):
        return EndOfRun(math.nan, math.nan, 0)
    last = acc[-fifth(len(acc)) :]
    se = float(np.std(last, ddof=1) / math.sqrt(len(last))) if len(last) > 1 else 0.0
    return EndOfRun(float(last.mean()), se, len(last))


def plateau(acc) -> tuple[bool, float]:
    """(reached, change): change = mean accuracy over the last fifth of the evaluations `acc` (in their
    order) minus the mean over the fifth before it; reached when change, rounded as printed, is below
    PLATEAU_CHANGE. A run with
    fewer than two evaluations has no fifth before the last: (False, NaN)."""
    acc = np.asarray(acc, dtype=float)
    if len(acc) < 2:
        return False, math.nan
    k = fifth(len(acc))  # 2 x ceil(n / 5) <= n for every n >= 2: the two fifths never overlap
    change = float(acc[-k:].mean() - acc[-2 * k : -k].mean())
    return change_points(change) < 100 * PLATEAU_CHANGE, change


def change_points(change: float) -> float:
    """A change of accuracy in percentage points, rounded as printed (`+1.0`): what the rule compares."""
    return round(100 * change, DECIMALS)


def plateau_cell(acc) -> str:
    """`yes (change +0.3 pt)` / `no (change +2.1 pt)`: the plateau criterion on the evaluations `acc`,
    for a table cell or a footnote."""
    reached, change = plateau(acc)
    if math.isnan(change):
        return "n/a (fewer than 2 evaluations)"
    return f"{'yes' if reached else 'no'} (change {change_points(change):+.{DECIMALS}f} pt)"
