"""``make bench``: every benchmark module in tests/bench, one after the other (never in parallel: they
would measure each other). Each prints its figures; BENCHMARKS.md records them with this command."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time

import tests.bench as bench


def main() -> int:
    failed = []
    for mod in sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_")):
        print(f"== {mod}", flush=True)
        t = time.monotonic()
        try:
            rc = importlib.import_module(f"tests.bench.{mod}").main([])
        except Exception as exc:  # one broken benchmark does not hide the others
            print(f"{mod} failed: {exc!r}", flush=True)
            rc = 1
        print(f"== {mod} done in {time.monotonic() - t:.0f} s (rc={rc})", flush=True)
        if rc:
            failed.append(mod)
    if failed:
        print("failed:", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
