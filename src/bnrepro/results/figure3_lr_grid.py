"""The base-LR grid of the Figure 3 proxy: results/figure3_lr_grid.md from the Inception runs of
experiment=fashion_figure3_lr_grid (one run per base LR).

Inception's base LR on the proxy is tuned before any BN variant is run, and the paper's multipliers (x5,
x30) and the Sec. 4.2.1 changes are applied relative to it (conf/experiment/fashion_figure3.yaml,
`lr_multiplier.base`). The rule (`choose`), stated in the file it writes:

  the base LR whose run has the highest mean accuracy over the last fifth of its evaluations (the
  level the run ends at, less noisy than its maximum); among the LRs within one standard error of that
  best mean (the SE of the best run's mean over those evaluations), the smallest. A diverged run is
  never chosen.

Per base LR the file gives the max accuracy (at step), the final accuracy, that last-fifth mean ± SE,
whether the run reached its plateau (plateau.py) and whether it diverged, then the chosen value and the
line to put into conf/experiment/fashion_figure3.yaml. results/figure3_lr_grid.json holds the same
decision for `just proxy` (`chosen_base_lr`, null when no run can be chosen).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from bnrepro.results.cells import fmt_steps, pct
from bnrepro.results.page import Page, table
from bnrepro.results.plateau import EndOfRun, end_of_run, plateau, plateau_cell
from bnrepro.results.runs import (
    REFERENCE_BATCH,
    Run,
    accuracy_curve,
    base_lr,
    best,
    diverged_at,
    final_accuracy,
)

CONF_FILE = "conf/experiment/fashion_figure3.yaml"


@dataclass
class GridRow:
    lr: float
    run: Run
    end: EndOfRun

    @property
    def diverged(self) -> bool:
        return self.run.summary.get("status") == "diverged"


def grid_rows(runs: list[Run]) -> list[GridRow]:
    """One row per base LR (the newest run of each; runs come oldest first), smallest LR first."""
    newest = {base_lr(r): r for r in runs}
    return [GridRow(lr, r, end_of_run(accuracy_curve(r)[1])) for lr, r in sorted(newest.items())]


def choose(rows: list[GridRow]) -> tuple[GridRow | None, GridRow | None, list[GridRow]]:
    """(chosen, best, within): `best` has the highest mean over the last fifth of its evaluations,
    `within` are the rows whose mean is within one SE (best's) of it, `chosen` the smallest LR of those.
    (None, None, []) when every run diverged."""
    usable = [r for r in rows if not r.diverged and not math.isnan(r.end.mean)]
    if not usable:
        return None, None, []
    top = max(usable, key=lambda r: r.end.mean)
    within = [r for r in usable if r.end.mean >= top.end.mean - top.end.se]
    return min(within, key=lambda r: r.lr), top, within


def _lr(x: float) -> str:
    return f"{x:g}"


COLUMNS = {"lr": "base LR", "max": "max accuracy (at step)", "final": "final accuracy",
           "end": "mean over the last fifth ± SE (evaluations)", "plateau": "plateau reached", "diverged": "diverged"}  # fmt: skip


def grid_table(rows: list[GridRow], chosen: GridRow | None) -> list[str]:
    return table(COLUMNS, [table_row(r, r is chosen) for r in rows])


def table_row(r: GridRow, chosen: bool) -> dict[str, str]:
    top, at = best(r.run)
    when = diverged_at(r.run)
    status = r.run.summary.get("status", "?")
    return {
        "lr": _lr(r.lr) + (" **(chosen)**" if chosen else ""),
        "max": f"{pct(top)} at {fmt_steps(at)}",
        "final": pct(final_accuracy(r.run)) if r.run.finished else f"n/a ({status})",
        "end": f"{pct(r.end.mean)} ± {100 * r.end.se:.2f} pt ({r.end.n})",
        "plateau": plateau_cell(accuracy_curve(r.run)[1]),
        "diverged": "no"
        if not r.diverged
        else "yes (step unknown)"
        if when is None
        else f"yes, at {fmt_steps(when)}",
    }


def decision(rows: list[GridRow]) -> list[str]:
    chosen, top, within = choose(rows)
    if chosen is None:
        return ["**No base LR can be chosen: no run of the grid trained without diverging.**"]
    lines = [
        f"Best mean over the last fifth: base LR {_lr(top.lr)} ({pct(top.end.mean)} ± "
        f"{100 * top.end.se:.2f} pt). Within one SE of it: "
        + ", ".join(_lr(r.lr) for r in within)
        + f". **Chosen: base LR {_lr(chosen.lr)}**"
        + (" (the best itself)." if chosen is top else " (the smallest of those)."),
        "",
        f"In {CONF_FILE}:",
        "",
        "```yaml",
        "lr_multiplier:",
        f"  base: {_lr(chosen.lr)}",
        "```",
    ]
    if not plateau(accuracy_curve(chosen.run)[1])[0]:
        lines += ["", "**Warning: the chosen LR's run has not reached its plateau (see the table): the proxy "
                  "is too short for it, and the choice may change with a longer one.**"]  # fmt: skip
    batches = sorted({r.run.summary.get("global_batch", REFERENCE_BATCH) for r in rows})
    if batches != [REFERENCE_BATCH]:
        lines += ["", f"**Warning: global batch {batches}, not {REFERENCE_BATCH}: the base LRs above are the "
                  "initial LRs as the runs scaled them, not lr_multiplier.base.**"]  # fmt: skip
    return lines


def render(runs: list[Run], out_dir: str | Path, command: str, spec: dict | None = None) -> list[Path]:
    page = Page.of(runs, out_dir, command, spec)
    rows = grid_rows(runs)
    chosen = choose(rows)[0]
    body = [
        "Inception (no BN) on the proxy at each base LR of the grid, before any BN variant is run; the "
        "paper's multipliers (x5, x30) and the Sec. 4.2.1 changes are then applied relative to the chosen "
        "one. Accuracies are single-crop top-1 on the proxy's test images; steps are paper-equivalent "
        "(examples seen / 32).",
        "",
        "The rule: the base LR whose run has the highest mean accuracy over the last fifth of its "
        "evaluations (ceil(n / 5) of n), the level the run ends at; among the base LRs within one standard "
        "error of that best mean (the SE of the best run's mean: sample std of those evaluations / "
        "sqrt(their number)), the smallest. A diverged run is never chosen. `plateau reached`: the mean "
        "over the last fifth minus the mean over the fifth before it is below 1 point.",
        "",
        *grid_table(rows, chosen),
        "",
        *decision(rows),
    ]
    md = page.markdown("figure3_lr_grid.md", "The Figure 3 proxy's base LR: Inception's LR grid", body)
    out_json = page.out_dir / "figure3_lr_grid.json"
    out_json.write_text(json.dumps(decision_record(rows, chosen), indent=1))
    if chosen is not None:
        print(
            f"figure3_lr_grid: chosen base LR {_lr(chosen.lr)}; in {CONF_FILE}: lr_multiplier.base: {_lr(chosen.lr)}"
        )
    return [md, out_json]


def decision_record(rows: list[GridRow], chosen: GridRow | None) -> dict:
    """figure3_lr_grid.json, what `just proxy` reads: `chosen_base_lr` (null when every run diverged) and
    per base LR the numbers the rule read (mean over the last fifth, its SE, plateau, diverged)."""

    def number(x: float) -> float | None:
        return None if math.isnan(x) else x

    return {
        "chosen_base_lr": chosen.lr if chosen is not None else None,
        "base_lrs": {_lr(r.lr): {"end_mean": number(r.end.mean), "end_se": number(r.end.se), "end_n": r.end.n,
                                 "plateau": plateau(accuracy_curve(r.run)[1])[0], "diverged": r.diverged}
                     for r in rows},
    }  # fmt: skip
