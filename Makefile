# Two entry points for a newcomer: `make quickstart` (set up + main job) and `make test` (set up + tests).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

SYNTH := data/synth
STUDIES := studies

.PHONY: setup test test-fast quickstart lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

# The main job: generate the synthetic benchmark (once), run the quickstart study, write its report.
quickstart: setup
	@test -f $(SYNTH)/synth.json || $(BIN)/msl data synth --out $(SYNTH)
	MSL_SYNTH=$(abspath $(SYNTH)) $(BIN)/msl-study run search_spaces/quickstart.yaml --storage $(STUDIES) \
		--name quickstart-$$(date +%Y%m%d-%H%M%S) --report

lint: setup
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info
