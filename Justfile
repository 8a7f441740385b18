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

# benchmarks: just bench mnist [--steps 5000 --repeats 3]
bench name="mnist" *args:
    shift; python -m bnrepro.bench.{{name}} "$@"
