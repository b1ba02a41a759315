# The two commands of the quick start: `make run` and `make test` (each sets itself up).
.PHONY: setup run test corpus lint

setup:
	@bash scripts/setup.sh

run: setup
	.venv/bin/python app.py

test: setup
	.venv/bin/python -m pytest -q

corpus: setup
	.venv/bin/python -m training.corpus build --out data/corpus

lint: setup
	.venv/bin/ruff check .
