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

from bnrepro.results.figure3_rows import by_model, resolve_target  # noqa: E402  (Figure 3's target)
from bnrepro.results.page import Page, figure_provenance, steps_axis  # noqa: E402
from bnrepro.results.runs import Run, accuracy_curve, divergence_mark, steps_to  # noqa: E402
from bnrepro.variants import FIGURE3, REFERENCE  # noqa: E402  (the variants, their labels and styles)


def render(runs: list[Run], out_dir: str | Path, command: str, spec: dict | None = None) -> list[Path]:
    page = Page.of(runs, out_dir, command, spec)
    prov, grouped = page.prov, by_model(runs)
    target, origin = resolve_target(page.spec.get("target", REFERENCE), grouped)

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
            if (mark := divergence_mark(run)) is not None:
                ax.plot(*([x] for x in mark), "x", color=color, ms=8)
    if target is not None:
        ax.axhline(target, color="0.5", lw=0.8, ls=":")
        ax.text(ax.get_xlim()[1], target, f" target {100 * target:.1f}%", va="bottom", ha="right",
                fontsize=7, color="0.3")  # fmt: skip
    missing = [v.label for m, v in FIGURE3.items() if not grouped.get(m)]
    ax.set(xlabel="paper-equivalent steps (examples seen / 32)", ylabel="single-crop top-1 accuracy")
    steps_axis(ax)
    ax.legend(loc="lower right", fontsize=8, title="o: reaches target; x: diverged", title_fontsize=7)
    ax.grid(alpha=0.3)
    title = "Figure 2 (Ioffe & Szegedy 2015) regenerated\n" + textwrap.fill(f"Data: {prov['data']}", 110)
    if missing:
        title += f"\nmissing: {', '.join(missing)}"
    ax.set_title(title, fontsize=8)
    fig.tight_layout(rect=figure_provenance(fig, prov, f"target: {origin}"))
    paths = [page.out_dir / "figure2.png", page.out_dir / "figure2.svg"]
    for p in paths:
        fig.savefig(p, dpi=130, metadata={"Date": None} if p.suffix == ".svg" else None)
    plt.close(fig)
    return paths
