"""Checks of the built containers: tests/container/run.sh (`make test-container`)."""
