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
