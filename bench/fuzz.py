"""The fuzzers and property tests with many cases (Hypothesis profile `fuzz`).

    python -m bench.fuzz [--examples 20000] [PYTEST_ARGS...]

Every test run (`.ci/run`) gives each property test a hundred cases (profile `ci`, in
tests/conftest.py); this runs the same tests with --examples cases each (default 20,000):
the frame decoder, request and patch validation against a real daemon's handlers, the wire
bounds, selectors, the realm model and the protocol. Prints pytest's summary and the wall
time; exit status is pytest's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
PROPERTY_TESTS = ["tests/test_hostile.py", "tests/test_wire_bounds.py", "tests/test_selector.py",
                  "tests/test_realm_model.py", "tests/test_protocol.py"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=20_000)
    args, rest = parser.parse_known_args()
    env = {**os.environ, "IX_HYPOTHESIS_PROFILE": "fuzz"}
    # the profile's count, overridden from the command line
    env["IX_FUZZ_EXAMPLES"] = str(args.examples)
    begin = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-m", "hypothesis",  # the mark Hypothesis gives its tests
                           *(rest or PROPERTY_TESTS)], cwd=PROJECT, env=env, check=False)
    print(f"fuzz: {args.examples} cases per property test, {time.perf_counter() - begin:.1f} s")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
