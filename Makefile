# Two commands for a fresh machine (see README.md):
#   make demo   the fleet demo: virtual boards, a gateway, a cloud link, a live dashboard
#   make test   the whole test suite
.PHONY: demo test setup bench lint

setup:
	tools/setup.sh

demo: setup
	.venv/bin/python -m tools.demo $(ARGS)

test:
	tools/run_tests.sh $(ARGS)

bench: setup
	.venv/bin/python -m bench $(ARGS)

lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy
