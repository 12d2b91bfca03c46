# Two entry points (see README): `make report` and `make test`.
# Everything else here is set-up they depend on: a .venv in the repo and npm packages from the lock file.
PY := .venv/bin/python
VENV_STAMP := .venv/.installed
NPM_STAMP := node_modules/.installed

.PHONY: report test setup bench clean-cache
report: setup
	$(PY) -m defirisk report --out reports/latest

test: setup
	$(PY) -m pytest -q

setup: $(VENV_STAMP) $(NPM_STAMP)

$(VENV_STAMP): pyproject.toml
	python3 -m venv .venv
	.venv/bin/pip install -q --upgrade pip
	.venv/bin/pip install -q -e '.[test]'
	touch $@

$(NPM_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund  # exactly package-lock.json (it lists every platform's optional anvil build)
	touch $@

bench: setup
	$(PY) benchmarks/solver.py
	$(PY) benchmarks/snapshot.py

clean-cache:
	rm -rf .cache/defirisk
