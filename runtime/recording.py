"""Input frames and output lines: the formats of ``run --record``, ``run --record-outputs`` and ``replay``.

Both the live runner and replay format lines here, so identical cycles give identical bytes
(docs/design.md#replay-and-recording).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from runtime.api import Command
from runtime.engine import StepResult
from runtime.tags import US, Quality, TagUpdate, TagValue

_DUMP = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def frame_line(k: int, now_us: int, changes: Mapping[str, TagValue], commands: tuple[Command, ...] = ()) -> str:
    tags: dict[str, Any] = {}
    for name in sorted(changes):
        tv = changes[name]
        tags[name] = tv.value if tv.quality is Quality.GOOD else {"value": tv.value, "quality": tv.quality.value}
    obj: dict[str, Any] = {"k": k, "t": now_us / US, "tags": tags}
    if commands:
        obj["commands"] = [{"name": c.name, **({"args": dict(c.args)} if c.args else {})} for c in commands]
    return _DUMP(obj) + "\n"


def output_line(res: StepResult, names: list[str]) -> str:
    img = res.image
    tags = {n: img[n].value for n in names}
    state = img.tag("mode.state").value if "mode.state" in img else None
    return _DUMP({"k": res.k, "t": res.now_us / US, "state": state, "tags": tags}) + "\n"


def output_names(res_image_names: list[str]) -> list[str]:
    return sorted(res_image_names)


@dataclass
class Frame:
    line: int
    t_us: int
    updates: list[TagUpdate]
    commands: list[Command] = field(default_factory=list)


class FrameError(ValueError):
    pass


def read_frames(path: Path) -> Iterator[Frame]:
    """Parse an input file; a malformed line raises FrameError naming file and line."""
    with open(path, encoding="utf-8") as fh:
        for no, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
                t = obj["t"]
                if not isinstance(t, (int, float)) or isinstance(t, bool) or t < 0:
                    raise ValueError("t must be a number >= 0")
                ups = []
                for name, v in obj.get("tags", {}).items():
                    if isinstance(v, dict):
                        ups.append(TagUpdate(name, v.get("value"), Quality(v.get("quality", "good"))))
                    else:
                        ups.append(TagUpdate(name, v))
                cmds = [Command(c["name"], c.get("args", {})) for c in obj.get("commands", [])]
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise FrameError(f"{path}:{no}: bad input frame: {exc}") from None
            yield Frame(no, round(t * US), ups, cmds)


class Writer:
    """Line writer for recordings; buffered, flushed at exit."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fh: IO[str] = open(path, "w", encoding="utf-8", buffering=1 << 16)  # noqa: SIM115 (open for the run)

    def write(self, line: str) -> None:
        self.fh.write(line)

    def close(self) -> None:
        self.fh.close()
