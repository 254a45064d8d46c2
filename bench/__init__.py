"""Benchmarks that print figures (not timed tests). Run each from the project's folder as a
module, e.g. `.venv/bin/python -m bench.overhead`: they share `tests/daemon_harness.py` (a
real ixd, the real `ixc`) and `bench/_daemon.py` through the packages, with no path edits."""
