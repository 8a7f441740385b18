"""The frame of a result file made from training runs, shared by the renderers so each says the same.

A renderer builds its rows and hands them here: `Page.of(...)` opens the output folder and states the runs'
provenance (`provenance`: commits, hardware, batch, paths made relative); `table` turns row dicts into
markdown; `Page.markdown` writes the bold commit warnings first, the data banner (`DATA_NAMES`: "NOT
ImageNet" for the proxies), the body, then the provenance list; on a figure, `figure_provenance` writes
the warnings above it and a footer of provenance below. No absolute path is written: everything goes
through `prov["paths"]`.
"""

from __future__ import annotations

import itertools
import os
import re
import textwrap
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from bnrepro.provenance import git_sha
from bnrepro.results.cells import fmt_steps
from bnrepro.results.runs import Run

REPOSITORY = Path(__file__).resolve().parents[3]  # this checkout: src/bnrepro/results/page.py
# The data banner of the Figure 3 proxy's results (Figures 2 and 3, the LR grid, LR stability).
DATA_NAMES = {
    "imagenet": "ImageNet (ILSVRC-2012), single-crop top-1 on the 50k validation images",
    "imagenette": "Imagenette (10 ImageNet classes) -- a proxy; the paper's numbers are on ImageNet",
    "fashion_mnist": "Fashion-MNIST as 3-channel images -- an offline proxy, NOT ImageNet; "
    "the paper's numbers are on ImageNet",
    "synthetic": "synthetic random images -- a smoke test with nothing to learn",
}


@dataclass
class Page:
    """One result's output: its folder, its runs' provenance, where they were read and the spec."""

    out_dir: Path
    prov: dict
    spec: dict = field(default_factory=dict)

    @classmethod
    def of(cls, runs: list[Run], out_dir, command: str, spec: dict | None = None,
           data_names: dict | None = None) -> Page:  # fmt: skip
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        return cls(out_dir, provenance(runs, command, DATA_NAMES if data_names is None else data_names),
                   dict(spec or {}))  # fmt: skip

    def markdown(self, name: str, title: str, body: list[str]) -> Path:
        """Writes results/<name>: the frame (`markdown`) around `body`."""
        path = self.out_dir / name
        path.write_text(markdown(title, self.prov, body, self.spec.get("source", "local run folders")))
        return path


def table(columns: dict[str, str], rows: list[dict]) -> list[str]:
    """A markdown table: `columns` maps each row dict's key to its header, in the table's order."""
    return [
        "| " + " | ".join(columns.values()) + " |",
        "|" + "---|" * len(columns),
        *("| " + " | ".join(str(r[key]) for key in columns) + " |" for r in rows),
    ]


def steps_axis(ax) -> None:
    """Paper-equivalent steps on the x axis, in the tables' unit (fmt_steps)."""
    ax.xaxis.set_major_formatter(
        lambda x, _: fmt_steps(x) if x else "0"
    )  # matplotlib wraps it in a FuncFormatter


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
    """A results/*.md file made from runs: `# title`, warnings, `**Data: ...**`, the body's lines,
    provenance. `prov`: provenance(...); `source`: where the runs were read (the spec's `source`)."""
    return frame(title, prov["warnings"], [f"**Data: {prov['data']}**", "", *body], provenance_lines(prov, source),
                 prov["paths"])  # fmt: skip


def frame(title: str, warnings: list[str], body: list[str], provenance: list[str], paths) -> str:
    """The one layout of every results/*.md: `# title`, the bold warnings, the body, the provenance list
    (provenance_lines for runs; Figure 4's for evaluations), every absolute path made relative by `paths`."""
    return paths(
        "\n".join([f"# {title}", "", *[line for w in warnings for line in (w, "")], *body, "", *provenance])
    )


FOOTER_SIZE = 5  # points
# The widest a footer character is on average, in ems (digits and capitals of DejaVu Sans are 0.6-0.7): a
# line of fig width / (FOOTER_SIZE x this) characters fits.
CHAR_EM = 0.7


def figure_provenance(fig, prov: dict, note: str = "") -> tuple[float, float, float, float]:
    """Writes the warnings (bold, at the top, as at the top of the tables) and a footer (command, commits,
    hardware, `note`) on `fig`; returns the rect for fig.tight_layout that leaves room for both. The footer
    is wrapped to the figure's width, so a long note never pushes the commits and the run count off it."""
    warnings = [textwrap.fill(w.strip("*"), 150) for w in prov["warnings"]]
    if warnings:
        fig.text(0.5, 0.995, "\n".join(warnings), ha="center", va="top", fontsize=6, fontweight="bold",
                 color="darkred")  # fmt: skip
    footer = prov["paths"](
        f"{prov['command']}   {note + '   ' if note else ''}trained at git {short_sha(prov['git_sha'])}, "
        f"rendered at git {short_sha(prov['rendered_sha'])}   {prov['hardware']}   world size "
        f"{prov['world_size']}, global batch {prov['global_batch']}, {prov['num_runs']} runs")  # fmt: skip
    width = int(0.98 * fig.get_figwidth() * 72 / (FOOTER_SIZE * CHAR_EM))
    lines = textwrap.wrap(footer, width, break_on_hyphens=False)
    fig.text(0.01, 0.005, "\n".join(lines), fontsize=FOOTER_SIZE, color="0.4")
    # One line fits in the bottom 3%; each further one takes its height (matplotlib's line spacing: 1.2).
    bottom = 0.03 + (len(lines) - 1) * 1.2 * FOOTER_SIZE / 72 / fig.get_figheight()
    return (0, bottom, 1, 1 - 0.03 * sum(w.count("\n") + 1 for w in warnings))


def provenance(runs: list[Run], command: str, data_names: dict | None = None) -> dict:
    """What every table and figure states about the runs behind it. Paths and commands are made relative
    (`paths`); `warnings` are the bold lines a file starts with when it cannot be re-derived from one commit."""
    s = runs[0].summary if runs else {}
    trained = sorted({str(r.summary.get("git_sha") or "unknown") for r in runs}) or ["unknown"]
    rendered = git_sha()
    paths = RelativePaths.of(
        [r.path for r in runs],
        [str(r.summary.get("command", "")) for r in runs],
        [r.summary.get("task") for r in runs],
    )
    return {
        "data": (data_names or {}).get(s.get("data"), s.get("data", "unknown")),
        "command": paths(command),
        "git_sha": ", ".join(trained),  # the commit(s) the runs were trained at
        "rendered_sha": rendered,  # the commit this file is rendered at
        "warnings": commit_warnings(trained, rendered),
        "hardware": ", ".join(sorted({str(r.summary.get("hardware", "unknown")) for r in runs})) or "unknown",
        "world_size": ", ".join(sorted({str(r.summary.get("world_size")) for r in runs})),
        "global_batch": ", ".join(sorted({str(r.summary.get("global_batch")) for r in runs})),
        "num_runs": len(runs),
        "runs": ", ".join(paths.path(r.path) for r in runs),
        # How the runs were trained (their own command lines; one line when only model= differs).
        "run_commands": sorted(
            {
                paths(re.sub(r"model=\S+", "model=<variant>", r.summary.get("command", "unknown")))
                for r in runs
            }
        ),
        "paths": paths,
        "rendered": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def short_sha(shas: str) -> str:
    """Commit(s) cut to 12 characters for a figure's footer, keeping the `-dirty` marker."""
    return ", ".join(
        sha if sha == "unknown" else sha[:12] + ("-dirty" if sha.endswith("-dirty") else "")
        for sha in (s.strip() for s in shas.split(","))
    )


def commit_warnings(trained: list[str], rendered: str, what: str = "runs were trained") -> list[str]:
    """Bold lines for the top of a file that cannot be re-derived from one clean commit: a dirty or unknown
    tree (rendering, or the runs'), or runs made at another commit than the one rendering."""
    out = []
    if rendered == "unknown":
        out.append("**Warning: rendered outside a git checkout: the rendering commit is unknown.**")
    elif rendered.endswith("-dirty"):
        out.append(f"**Warning: rendered from a tree with uncommitted changes ({rendered}): this file cannot "
                   "be re-derived from a commit.**")  # fmt: skip
    dirty = [s for s in trained if s.endswith("-dirty")]
    if dirty:
        out.append(f"**Warning: the {what} from a tree with uncommitted changes ({', '.join(dirty)}): their "
                   "code is in no commit.**")  # fmt: skip
    if "unknown" in trained:
        out.append(f"**Warning: some {what} at an unknown commit.**")
    clean = rendered.removesuffix("-dirty")
    others = sorted({s for s in trained if s != "unknown" and s.removesuffix("-dirty") != clean})
    if others and rendered != "unknown":
        out.append(f"**Warning: the {what} at another commit ({', '.join(others)}) than the one rendering this "
                   f"file ({rendered}): re-deriving it needs both.**")  # fmt: skip
    return out


# An absolute path inside free text: a slash that starts a word (not one inside a URL, a fraction or
# `n/a`), followed by a path.
_ABSOLUTE = re.compile(r"(?<![\w.~:/<>)\]-])/[\w.@+~-]+(?:/[\w.@+~-]*)*")
RUNS_ROOT = "$runs_root"  # the runs folder, when it lies outside every checkout


class RelativePaths:
    """Rewrites absolute paths so no rendered file names a folder of the machine that made it.

    A path inside a checkout of this repository (the one rendering, or one named by a run's command as
    `<checkout>/src/train.py`) becomes relative to it; one inside a runs folder outside every checkout,
    `$runs_root/...`; a script of another checkout `src/...`; anything else `.../<its name>`.
    """

    def __init__(self, checkouts: list[Path], runs_roots: list[Path]):
        bases = [(Path(b), "") for b in checkouts] + [(Path(b), RUNS_ROOT) for b in runs_roots]
        # Deepest first; a checkout before a runs folder of the same depth.
        self.bases = sorted(dict.fromkeys(bases), key=lambda b: (-len(b[0].parts), b[1]))

    @classmethod
    def of(cls, paths, commands=(), tasks=(), marker: str | None = None) -> RelativePaths:
        """From run folders (their runs folder: the parent of the folder named by the run's task, or of
        `marker`) and the commands that made them (`<checkout>/src/<script>.py`)."""
        checkouts = [REPOSITORY]
        for command in commands:
            checkouts += [Path(m) for m in re.findall(r"(/\S*?)/src/\w+\.py\b", command or "")]
        roots = []
        for path, task in itertools.zip_longest(paths, tasks):
            p = Path(str(path))
            if not p.is_absolute():
                continue
            named = [a for a in p.parents if a.name in {task, marker} - {None}]
            root = named[0].parent if named else p.parent.parent
            if not any(root.is_relative_to(c) for c in checkouts):
                roots.append(root)
        return cls(checkouts, roots)

    def path(self, path) -> str:
        p = Path(str(path))
        if not p.is_absolute():
            return str(path)
        for base, label in self.bases:
            rel = _below(p, base)
            if rel is not None:
                return str(rel) if not label else label if rel == Path(".") else f"{label}/{rel}"
        if "src" in p.parts[:-1]:  # a script of a checkout that is not here
            return str(Path(*p.parts[len(p.parts) - 1 - p.parts[::-1].index("src") :]))
        return f".../{p.name}" if p.name else "..."

    def __call__(self, text: str) -> str:
        return _ABSOLUTE.sub(lambda m: self.path(m.group()), text)


def _below(path: Path, base: Path) -> Path | None:
    """`path` relative to `base` (either as written or with symlinks resolved); None if not below it."""
    for p in dict.fromkeys((path, Path(os.path.realpath(path)))):
        for b in dict.fromkeys((base, Path(os.path.realpath(base)))):
            if p.is_relative_to(b):
                return p.relative_to(b)
    return None
