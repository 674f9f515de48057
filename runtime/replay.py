"""``v2g-plc replay``: programs and safety over recorded input frames, in simulated time.

Cycle ``k`` runs at ``now = k * P`` (integer microseconds). A frame applies at the first cycle with
``k * P >= t``. Tags a frame does not name keep value and quality and count as freshly read, so in replay
staleness comes only from an explicit ``"quality": "stale"``. Replay runs until the last frame's ``t``.
"""

from __future__ import annotations

from pathlib import Path

from runtime.recording import Writer, output_line, read_frames
from runtime.runner import apply_force
from runtime.site import BuiltSite
from runtime.tags import Direction


def replay(built: BuiltSite, inputs: Path, outputs: Path) -> int:
    """Returns the number of cycles run. Raises FrameError for a malformed input line."""
    engine = built.engine(age_inputs=False)
    period = built.info.period_us
    names = sorted(s.name for s in built.tags.by_direction(Direction.OUTPUT, Direction.MEMORY))
    frames = list(read_frames(inputs))
    if not frames:
        Writer(outputs).close()
        return 0
    last_t = max(f.t_us for f in frames)
    frames.sort(key=lambda f: f.t_us)  # stable: frames with equal t apply in file order
    out = Writer(outputs)
    i = 0
    k = 0
    try:
        while True:
            now = k * period
            ups, cmds = [], []
            while i < len(frames) and frames[i].t_us <= now:
                ups.extend(frames[i].updates)
                cmds.extend(frames[i].commands)
                i += 1
            res = engine.step(now, ups, tuple(c for c in cmds if not apply_force(engine, c)))
            out.write(output_line(res, names))
            k += 1
            if now >= last_t:
                break
    finally:
        out.close()
    return k
