"""A disk cache of the reference runs (baseline and perfect foresight) of a backtest.

Every backtest prices its strategy against the scenario's baseline and the perfect-foresight bound, each
a full run of the site; they depend only on the price file, the scenario, the safety overrides and the
code, so a second backtest of the same inputs (another strategy, ``--compare``, a benchmark) reads them
back instead. The key hashes all of that, the code as the text of every module the runs execute, so an
edit to a program, the safety layer or the backtest invalidates it: a hit is exactly the run it stands for.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from backtest.run import Run

ROOT = Path(__file__).resolve().parent.parent
CODE = ("backtest", "programs", "safety", "runtime/engine.py", "runtime/tags.py", "runtime/api.py")
FORMAT = 1


def default_dir() -> Path:
    """``$V2G_PLC_CACHE_DIR``, else ``$XDG_CACHE_HOME/v2g-plc/backtest``, else ``~/.cache/v2g-plc/backtest``."""
    if d := os.environ.get("V2G_PLC_CACHE_DIR"):
        return Path(d)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "v2g-plc" / "backtest"


def _code_digest() -> str:
    h = hashlib.sha256()
    for part in CODE:
        p = ROOT / part
        for f in sorted(p.rglob("*.py")) if p.is_dir() else [p]:
            h.update(str(f.relative_to(ROOT)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def key(kind: str, prices: Path, scenario: Path, safety: Mapping[str, Any] | None) -> str:
    h = hashlib.sha256()
    for part in (kind, str(FORMAT), _code_digest(), json.dumps(safety or {}, sort_keys=True)):
        h.update(part.encode() + b"\0")
    h.update(prices.read_bytes() + b"\0")
    h.update(scenario.read_bytes())
    return h.hexdigest()[:32]


def load(directory: Path, k: str) -> tuple[Run, dict[str, Any]] | None:
    import numpy as np

    from backtest.run import Run

    path = directory / f"{k}.npz"
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            run = Run(meta["strategy"], z["grid_kw"], z["soc"], meta["replans"], cycles=meta["cycles"])
            run.events = meta["events"]
            return run, meta["extra"]
    except (OSError, KeyError, ValueError):  # absent, unreadable or from another format: run again
        return None


def store(directory: Path, k: str, run: Run, extra: dict[str, Any]) -> None:
    """Written to a temporary name and renamed: a reader never sees half a file."""
    import numpy as np

    meta = {"strategy": run.strategy, "replans": run.replans, "cycles": run.cycles, "events": run.events}
    meta["extra"] = extra
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{k}.{os.getpid()}.npz"
        np.savez(tmp, grid_kw=run.grid_kw, soc=run.soc, meta=np.array(json.dumps(meta)))
        os.replace(tmp, directory / f"{k}.npz")
    except OSError:  # a cache that cannot be written costs time, never a result
        pass
