"""The Figure 3 proxy's pilot (results/figure3_pilot.{md,json,png}) from runs the tests write by hand: the
length rule picks the shortest candidate at which every run has plateaued, it can fail (a run still rising
-> null and a bold line), a run that stopped early fails the lengths it did not reach, and the budget is
recomputed from the runs' own s/step."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from test_figures import _load
from test_lr_grid import FLAT, grid
from test_lr_stability import lr_run

from bnrepro.results import figure3_lr_grid, figure3_pilot
from bnrepro.results.runs import load_run
from conftest import ROOT

LONGEST = 3250  # a pilot's length (the first 2-core pilot's, at width 0.25); evaluations every 250 steps
SPEC = {"budget": {"fashion_figure3_pilot_cpu": {"jobs": 2, "phases": {"pilot": 2, "variants": 12}}}}


def pilot_run(root, base, acc, wall=390.0, steps=LONGEST, status="finished"):
    """An Inception run of the pilot at base LR `base`, evaluated every 250 steps up to `steps`."""
    run = lr_run(root, "inception", 1, acc, base=base, steps=range(250, steps + 1, 250), status=status,
                 task="fashion_figure3_pilot_cpu", name=f"inception-lr{base}-seed0")  # fmt: skip
    run.summary.update(eval_every_steps=250, max_steps=LONGEST, steps=steps, wall_time_s=wall,
                       evaluations=steps // 250)  # fmt: skip
    (run.path / "summary.json").write_text(json.dumps(run.summary))
    return load_run(run.path)


def flat_from(step):
    """Rises linearly from 0.3 to 0.8 at `step`, then flat."""
    return lambda s: min(0.8, 0.3 + 0.5 * s / step)


def test_the_pilot_picks_the_shortest_length_at_which_every_run_has_plateaued(tmp_path):
    """0.005 is flat from step 1,000: its plateau is reached at 1,750 (at 1,500 the fifth before the last
    still holds 1,000's 0.8 and 750's 0.675: +6.2). 0.015 is flat from 1,500: at 2,000 the fifth before
    the last (1,250 and 1,500) is 0.758 (+4.2 pt), at 2,250 it is 1,500 and 1,750, flat. L = 2,250."""
    runs = [
        pilot_run(tmp_path, 0.005, flat_from(1000), wall=325.0),
        pilot_run(tmp_path, 0.015, flat_from(1500)),
    ]
    out = tmp_path / "results"
    md, js, png = figure3_pilot.render(runs, out, command="just reproduce figure3_pilot", spec=SPEC)
    decided = json.loads(js.read_text())
    assert decided["length_steps"] == 2250
    assert list(decided["candidates"]) == [str(L) for L in range(1500, LONGEST + 1, 250)]
    assert decided["candidates"]["1750"] == {"0.005": [True, 0.0], "0.015": [False, 12.5]}
    assert decided["candidates"]["2000"]["0.015"] == [False, 4.2]
    assert decided["s_per_step"] == {"0.005": 0.1, "0.015": 0.12}
    text = md.read_text()
    assert "| 2,250 **(chosen)** | yes (change +0.0 pt) | yes (change +0.0 pt) | yes |" in text
    assert "| 2,000 | yes (change +0.0 pt) | no (change +4.2 pt) | no |" in text
    assert "**Chosen length: L = 2,250 steps**" in text and "NOT ImageNet" in text
    # The budget at L with the mean s/step (0.11): 2,250 x 0.11 / 60 = 4.1 min a run; 12 runs / 2 jobs.
    assert "| variants | 12 | 4.1 | 25 |" in text and "| **total** | **14** |  | **29** |" in text
    assert png.stat().st_size > 20_000


def test_the_pilot_rule_can_fail_on_a_run_still_rising(tmp_path):
    """0.015 rises by 0.25 points a step to the end: no length meets the rule, the JSON says null."""
    runs = [
        pilot_run(tmp_path, 0.005, flat_from(1000)),
        pilot_run(tmp_path, 0.015, lambda s: 0.3 + s / 10_000),
    ]
    md, js, _ = figure3_pilot.render(runs, tmp_path / "results", command="c", spec=SPEC)
    assert json.loads(js.read_text())["length_steps"] is None
    text = md.read_text()
    assert "**No candidate length up to 3,250 steps meets the rule" in text and "(chosen)" not in text
    assert "| 3,250 | yes (change +0.0 pt) | no (change +7.5 pt) | no |" in text


def test_a_run_that_stopped_early_fails_the_lengths_it_did_not_reach(tmp_path):
    """0.015 diverged after step 2,000: flat as it was, it says nothing about longer runs."""
    runs = [pilot_run(tmp_path, 0.005, flat_from(1000)),
            pilot_run(tmp_path, 0.015, flat_from(1000), steps=2000, status="diverged")]  # fmt: skip
    _, js, _ = figure3_pilot.render(runs, tmp_path / "results", command="c")
    decided = json.loads(js.read_text())
    assert decided["length_steps"] is None and decided["candidates"]["1750"]["0.015"] == [False, None]
    assert (
        "n/a (the run stopped at 2,000: diverged)" in (tmp_path / "results" / "figure3_pilot.md").read_text()
    )


def test_the_pilot_spec_has_a_budget_for_each_scale():
    """Each pilot experiment's task has the sequence's phases (the spec's `budget`), as the page needs."""
    spec = _load("reproduce").load_spec("figure3_pilot")
    assert set(spec["budget"]) == {"fashion_figure3_pilot", "fashion_figure3_pilot_cpu"}
    assert sum(spec["budget"]["fashion_figure3_pilot_cpu"]["phases"].values()) == 32


def test_just_proxy_reads_both_decisions_and_stops_without_them(tmp_path):
    """The Justfile's `decision` (in `just proxy`) on the JSON the renderers write: the pilot's length, the
    grid's base LR; a missing file or a null decision stops the sequence naming the file and the fix."""
    recipe = (ROOT / "Justfile").read_text().split("\nproxy ", 1)[1]
    line = next(x.strip() for x in recipe.splitlines() if x.strip().startswith("decision()"))
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}

    def decide(name, key):
        return subprocess.run(["bash", "-c", f"set -euo pipefail\n{line}\nv=$(decision {name} {key})\necho $v"],
                              cwd=tmp_path, env=env, capture_output=True, text=True)  # fmt: skip

    missing = decide("figure3_pilot", "length_steps")
    assert missing.returncode == 1 and missing.stdout == ""
    assert (
        "results/figure3_pilot.json: not found; `just reproduce figure3_pilot` renders it" in missing.stderr
    )
    runs = [
        pilot_run(tmp_path / "pilot", 0.005, flat_from(1000)),
        pilot_run(tmp_path / "pilot", 0.015, flat_from(1500)),
    ]
    figure3_pilot.render(runs, tmp_path / "results", command="c")
    assert decide("figure3_pilot", "length_steps").stdout == "2250\n"
    figure3_lr_grid.render(
        grid(tmp_path / "grid", {0.0015: FLAT, 0.005: FLAT}), tmp_path / "results", command="c"
    )
    assert decide("figure3_lr_grid", "chosen_base_lr").stdout == "0.0015\n"
    rising = [pilot_run(tmp_path / "rising", 0.005, lambda s: 0.3 + s / 10_000)]
    figure3_pilot.render(rising, tmp_path / "results", command="c")
    null = decide("figure3_pilot", "length_steps")
    assert null.returncode == 1 and "length_steps is null, see results/figure3_pilot.md" in null.stderr
