"""Figure 2 of the paper: validation accuracy vs paper-equivalent steps for the variants of
bnrepro/variants.py (in their colours and line styles), with a marker where each first reaches the target
(the Inception run's maximum: "steps to match Inception"). Writes results/figure2.png and .svg from the
same runs and target as results/figure3.md.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bnrepro.results.figure3 import (  # noqa: E402
    DATA_NAMES,
    accuracy_curve,
    by_model,
    diverged_at,
    fmt_steps,
    resolve_target,
    steps_to,
)
from bnrepro.results.page import figure_provenance  # noqa: E402
from bnrepro.results.runs import Run, provenance  # noqa: E402
from bnrepro.variants import FIGURE3, REFERENCE  # noqa: E402  (the variants, their labels and styles)


def render(runs: list[Run], out_dir: str | Path, command: str, spec: dict | None = None) -> list[Path]:
    spec = spec or {}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    grouped = by_model(runs)
    target, origin = resolve_target(spec.get("target", REFERENCE), grouped)
    prov = provenance(runs, command, DATA_NAMES)

    fig, ax = plt.subplots(figsize=(8, 5))
    for model, v in FIGURE3.items():
        color = v.color
        for i, run in enumerate(grouped.get(model, [])):
            steps, acc = accuracy_curve(run)
            (line,) = ax.plot(steps, acc, v.line, color=color, lw=1.2, label=v.label if i == 0 else None)
            color = line.get_color()  # a variant without a colour: its first curve's, for its other seeds
            hit = steps_to(run, target) if target is not None else None
            if hit is not None:
                ax.plot([hit], [target], "o", color=color, ms=6, mec="k")
            if run.summary.get("status") == "diverged":
                # At the step the loss became non-finite (paper-equivalent), at its last accuracy (0 if it
                # diverged before its first evaluation); the last evaluation may be long before.
                at = diverged_at(run)
                x = at if at is not None else (steps[-1] if len(steps) else 0.0)
                ax.plot([x], [acc[-1] if len(acc) else 0.0], "x", color=color, ms=8)
    if target is not None:
        ax.axhline(target, color="0.5", lw=0.8, ls=":")
        ax.text(ax.get_xlim()[1], target, f" target {100 * target:.1f}%", va="bottom", ha="right",
                fontsize=7, color="0.3")  # fmt: skip
    missing = [v.label for m, v in FIGURE3.items() if not grouped.get(m)]
    ax.set(xlabel="paper-equivalent steps (examples seen / 32)", ylabel="single-crop top-1 accuracy")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: fmt_steps(x) if x else "0"))
    ax.legend(loc="lower right", fontsize=8, title="o: reaches target; x: diverged", title_fontsize=7)
    ax.grid(alpha=0.3)
    title = "Figure 2 (Ioffe & Szegedy 2015) regenerated\n" + textwrap.fill(f"Data: {prov['data']}", 110)
    if missing:
        title += f"\nmissing: {', '.join(missing)}"
    ax.set_title(title, fontsize=8)
    fig.tight_layout(rect=figure_provenance(fig, prov, f"target: {origin}"))
    paths = [out_dir / "figure2.png", out_dir / "figure2.svg"]
    for p in paths:
        fig.savefig(p, dpi=130, metadata={"Date": None} if p.suffix == ".svg" else None)
    plt.close(fig)
    return paths
