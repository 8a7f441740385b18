"""The frame of a result file made from training runs, shared by the renderers so each says the same:
the bold commit warnings first, the data banner (`DATA_NAMES`: "NOT ImageNet" for the proxies), the body,
then the provenance list (`markdown`); on a figure, the warnings above it and a footer of provenance
below (`figure_provenance`). No absolute path is written: everything goes through `prov["paths"]`."""

from __future__ import annotations

import textwrap

from bnrepro.results.runs import RUNS_ROOT, short_sha


def provenance_lines(prov: dict, source: str) -> list[str]:
    return [
        "Provenance:",
        "",
        f"- data: {prov['data']}",
        f"- command: `{prov['command']}`",
        *[f"- runs trained with: `{c}`" for c in prov["run_commands"]],
        f"- source: {source}",
        f"- hardware: {prov['hardware']}; world size {prov['world_size']}; global batch {prov['global_batch']}",
        f"- runs trained at: {prov['git_sha']}",
        f"- rendered at: {prov['rendered_sha']}",
        f"- {prov['num_runs']} runs: {prov['runs']}",
        f"- paths: relative to the repository; `{RUNS_ROOT}`: the runs folder read, where it lies outside it",
        f"- rendered: {prov['rendered']}",
        "",
    ]


def markdown(title: str, prov: dict, body: list[str], source: str) -> str:
    """A results/*.md file: `# title`, warnings, `**Data: ...**`, the body's lines, provenance.
    `prov`: runs.provenance(...); `source`: where the runs were read (the spec's `source`)."""
    return prov["paths"]("\n".join([
        f"# {title}",
        "",
        *[line for w in prov["warnings"] for line in (w, "")],
        f"**Data: {prov['data']}**",
        "",
        *body,
        "",
        *provenance_lines(prov, source),
    ]))  # fmt: skip


def figure_provenance(fig, prov: dict, note: str = "") -> tuple[float, float, float, float]:
    """Writes the warnings (bold, at the top, as at the top of the tables) and a footer (command, commits,
    hardware, `note`) on `fig`; returns the rect for fig.tight_layout that leaves room for both."""
    warnings = [textwrap.fill(w.strip("*"), 150) for w in prov["warnings"]]
    if warnings:
        fig.text(0.5, 0.995, "\n".join(warnings), ha="center", va="top", fontsize=6, fontweight="bold",
                 color="darkred")  # fmt: skip
    fig.text(0.01, 0.005, prov["paths"](
             f"{prov['command']}   {note + '   ' if note else ''}trained at git {short_sha(prov['git_sha'])}, "
             f"rendered at git {short_sha(prov['rendered_sha'])}   {prov['hardware']}   world size "
             f"{prov['world_size']}, global batch {prov['global_batch']}, {prov['num_runs']} runs"),
             fontsize=5, color="0.4")  # fmt: skip
    return (0, 0.03, 1, 1 - 0.03 * sum(w.count("\n") + 1 for w in warnings))
