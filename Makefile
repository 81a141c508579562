# molmo_lite: `make run` is the course's main job, `make test` is what CI runs.
# Both create ./.venv on first use and install the package with everything the course needs.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test lab exercises notebooks bench install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The main job: the tiny Molmo on the shipped claim ViT (data_samples/backbones/vit_p7_claim2), stage 1 (captions),
# stage 2 (SFT mixture), held-out evaluation; writes runs/tiny/ (checkpoints, report.json, loss curves,
# predictions.png).
run: $(STAMP)
	$(PY) -m molmo_lite run --out runs/tiny

# Quick mode for the notebooks under nbval: the training chapters (08-12) shorten their loops, every code path
# still runs. `make test` sets it; `make notebooks` (the full runs whose outputs are committed) clears it.
QUICK := MOLMO_LITE_QUICK=1

# Unit, parity, bad-input and grading tests, then every chapter and solution notebook under nbval in quick mode.
# Exactly what CI runs (.ci/run calls this target), on a newcomer's machine as on CI's.
test: $(STAMP)
	$(PY) -m pytest tests -q
	$(QUICK) $(PY) -m pytest -q --nbval-lax --nbval-current-env -p no:cacheprovider notebooks solutions

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks

# Regenerate the student notebooks from the instructor's solutions.
exercises: $(STAMP)
	$(PY) -m molmo_lite exercises

# Re-execute every chapter and solution in place, so they are committed with fresh outputs.
notebooks: $(STAMP)
	cd notebooks && MOLMO_LITE_QUICK= ../$(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace *.ipynb
	cd solutions && MOLMO_LITE_QUICK= ../$(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace *.ipynb

# Every benchmark side by side (preprocess, decode, data, train, quantize, distributed) + benchmarks/results.json.
bench: $(STAMP)
	$(PY) -m benchmarks

clean:
	rm -rf outputs .pytest_cache
