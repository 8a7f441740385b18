# Recipes of the BN-Inception reproduction. `just` lists them; Hydra overrides pass through unchanged.
set positional-arguments

# list the recipes
default:
    @just --list

# install the project and its test tools into the current Python
setup:
    python -m pip install -e ".[dev]"

# train one run: just train model=mnist_mlp_bn data=fashion_mnist
train *args:
    python src/train.py "$@"

# run what a paper result is missing, then render it: just reproduce mnist [data=fashion_mnist]
reproduce name *args:
    python reproduce/reproduce.py "$@"

# pilot -> length L (results/figure3_pilot.json), LR grid at L -> base LR (results/figure3_lr_grid.json),
# then the LR sweep (the precondition), the sigmoid pair and the variants at L and that LR; each step renders
# before the next.
# Resumable: rerun it and finished runs are reused. cpu: 2 seeds, 2 jobs, < 3 h on 2 cores; gpu: 3 seeds.
# the Figure 3 proxy in the order of its decisions (docs/results.md "The Figure 3 proxy"): just proxy cpu|gpu
proxy scale="cpu":
    #!/usr/bin/env bash
    set -euo pipefail
    case "{{scale}}" in
      cpu) sfx=_cpu; seeds=0,1; jobs=2 ;;
      gpu) sfx=; seeds=0,1,2; jobs=5 ;;
      *) echo "just proxy cpu|gpu, not {{scale}}" >&2; exit 2 ;;
    esac
    decision() { python -c "import json, pathlib, sys; f = pathlib.Path('results/$1.json'); f.is_file() or sys.exit(f'{f}: not found; \`just reproduce $1\` renders it (the step before failed?)'); v = json.loads(f.read_text()).get('$2'); sys.exit(f'{f}: $2 is null, see results/$1.md; the sequence stops here') if v is None else print(v)"; }
    python reproduce/reproduce.py figure3_pilot experiment=fashion_figure3_pilot$sfx --jobs $jobs
    L=$(decision figure3_pilot length_steps)
    python reproduce/reproduce.py figure3_lr_grid experiment=fashion_figure3_lr_grid$sfx trainer.max_steps=$L --jobs $jobs
    LR=$(decision figure3_lr_grid chosen_base_lr)
    # The precondition (Inception at x5, in the LR sweep) before the variants, whose page cites it.
    python reproduce/reproduce.py lr_stability experiment=fashion_lr_stability$sfx trainer.max_steps=$L lr_multiplier.base=$LR --jobs $jobs
    python reproduce/reproduce.py lr_stability experiment=fashion_lr_stability_sigmoid$sfx trainer.max_steps=$L lr_multiplier.base=$LR --jobs $jobs
    python reproduce/reproduce.py figure3 experiment=fashion_figure3$sfx seed=$seeds trainer.max_steps=$L lr_multiplier.base=$LR --jobs $jobs

# rebuild results/ from finished run folders (never trains)
tables *names:
    python reproduce/reproduce.py --render-only "$@"

# the fast test suite (add -m slow for the long tests)
test *args:
    python -m pytest "$@"

# lint and format check
lint:
    ruff check .
    ruff format --check .

# `just --list` shows only the comment line right above a recipe, so the details go first, apart:
# `just bench` = BN-Inception's training step (Lightning vs plain PyTorch) + input pipeline (CPU vs GPU
# decode); `just bench mnist` = the MNIST training loop, then `just reproduce mnist data=fashion_mnist`
# end to end against a plain PyTorch script doing the same work; `just bench mnist_e2e|inception|pipeline
# [options]` runs one of them.

# benchmarks (docs/benchmarks.md): just bench [mnist|mnist_e2e|inception|pipeline] [options]
bench name="imagenet" *args:
    shift; if [ "{{name}}" = imagenet ]; then python -m bnrepro.bench.inception "$@" && python -m bnrepro.bench.pipeline; elif [ "{{name}}" = mnist ] && [ $# -eq 0 ]; then python -m bnrepro.bench.mnist && python -m bnrepro.bench.mnist_e2e; else python -m bnrepro.bench.{{name}} "$@"; fi

# class folders -> prepared chunks for data=<name>_prepared: just prepare imagenet [data.root=...] [prepare.output=...] [prepare.short_side=N|null]
prepare name *args:
    python -m bnrepro.data.prepare "$@"
