#!/usr/bin/env bash
# README's test command: set up (if needed), lint, and run the tests offline.
#
#   bash scripts/test.sh            everything, what CI runs (.ci/run): the fast tier, the slow tests and the
#                                   acceptance runs, spread over the CPU's cores with pytest-xdist
#   bash scripts/test.sh --fast     the fast tier only: no real-model training, no long CLI runs (under two
#                                   minutes on a 2-core machine); the loop to run while editing
#   bash scripts/test.sh [--fast] ARGS...   ARGS go to pytest (e.g. -k verify, tests/test_config.py, -n 0)
#
# Tiers are pytest markers (pyproject.toml): `slow`, `acceptance`; a test with neither is in the fast tier and
# fails if it takes longer than tests/conftest.py's FAST_TEST_SECONDS.
set -euo pipefail
cd "$(dirname "$0")/.."
FAST=0
if [ "${1:-}" = "--fast" ]; then FAST=1; shift; fi
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
.venv/bin/ruff check src tests scripts examples
# One worker per core (at most 4: each worker holds a model), one math thread per worker, so the workers do not
# fight over the cores; a test that starts a CLI passes the same limit on to it. Whole files go to a worker, in
# tests/conftest.py's order (the files with the longest runs first): a module's fixtures (a smoke run, a reference
# run) are then made once.
WORKERS=${TEST_WORKERS:-$(( $(nproc) < 4 ? $(nproc) : 4 ))}
if [ "$WORKERS" -gt 1 ]; then
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( $(nproc) / WORKERS > 0 ? $(nproc) / WORKERS : 1 ))}
    PARALLEL=(-n "$WORKERS" --dist loadfile --no-loadscope-reorder)
else
    PARALLEL=()
fi
if [ "$FAST" = 1 ]; then
    exec .venv/bin/python -m pytest "${PARALLEL[@]}" -m "not slow and not acceptance" "$@"
fi
# the slowest tests' times in the log: where CI's 20 minutes go
exec .venv/bin/python -m pytest "${PARALLEL[@]}" --durations=25 "$@"
