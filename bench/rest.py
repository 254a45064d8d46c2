"""Benchmark: ixd at rest on an empty store (issue 29, item 3: <= 40 MiB RSS).

    python -m bench.rest [--repeat 3]

Starts a real ixd on a fresh root (`--jobs 2`, build users, confined), asks it one `ping`,
lets it settle, and prints its RSS, PSS (its share of pages it shares with other processes),
anonymous and file-backed memory, and threads; the median of `--repeat` daemons. Then what
it imported, by top-level package (in a separate interpreter: `import ixd.daemon.main`, the
daemon's own imports at start), the largest first, with the interpreter's own start beside it.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from bench._daemon import PYTHON, BenchDaemon, env, load_average, proc_memory

#: /proc/PID/status and smaps_rollup fields printed, in kB
FIELDS = ("VmRSS", "RssAnon", "RssFile", "Pss", "Threads")


def at_rest() -> dict[str, int]:
    with BenchDaemon.start(jobs=2, label="rest") as daemon:
        daemon.request("ping", {})
        time.sleep(1.0)  # its start-up threads done, nothing asked of it
        return proc_memory(daemon.process.pid, FIELDS)


#: VmRSS in kB (not ru_maxrss: Linux carries that high-water mark over exec from the parent)
RSS = "[l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1]"

IMPORTS = f"""
import sys
before = set(sys.modules)
import ixd.daemon.main
tops = {{}}
for name in set(sys.modules) - before:
    top = name.split(".")[0]
    tops[top] = tops.get(top, 0) + 1
print({RSS})
print(" ".join(f"{{t}}:{{n}}" for t, n in sorted(tops.items(), key=lambda i: -i[1])))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"ixd at rest on an empty store; {load_average()}")
    samples = [at_rest() for _ in range(args.repeat)]
    for key in FIELDS:
        value = statistics.median(s.get(key, float("nan")) for s in samples)
        shown = f"{value:.0f}" if key == "Threads" else f"{value / 1024:.1f} MiB"
        goal = "   (goal <= 40 MiB)" if key == "VmRSS" else ""
        print(f"  {key:<10} {shown:>10}{goal}")
    bare = subprocess.run([PYTHON, "-c", f"print({RSS})"], env=env(), capture_output=True,
                          text=True, check=True)
    imported = subprocess.run([PYTHON, "-c", IMPORTS], env=env(), capture_output=True,
                              text=True, check=True).stdout.splitlines()
    print(f"  the interpreter alone: {int(bare.stdout) / 1024:.1f} MiB; after ixd's imports "
          f"(no daemon): {int(imported[0]) / 1024:.1f} MiB")
    print(f"  modules imported, by package: {' '.join(imported[1].split()[:25])} ...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
