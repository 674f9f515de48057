"""What changed between the running revision and a validated new one, and whether it may change live.

Pure: two descriptions of validated sites in (``validate.describe``), a plan out. The rule (docs/online-change.md):
program and interlock params and task params change live; anything the scan process or a peer was built
from (devices, maps, the tag set, the scan period, the plant, the watchdog, the state directory, which
commands a task may send, which components run and in what order) needs a restart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

LIVE_SECTIONS = ("programs", "safety")  # params applied by the engine at a cycle boundary
TASK_SECTION = "tasks"  # params applied by restarting the task process from the new revision
COMPONENT_SECTIONS = ("devices", "programs", "safety", "tasks")


def diff_values(old: Any, new: Any, prefix: str = "") -> dict[str, list[Any]]:
    """Every leaf that differs, as ``{"dotted.key": [old, new]}`` (a key only one side has: None on the other)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out: dict[str, list[Any]] = {}
        for key in list(old) + [k for k in new if k not in old]:
            out.update(diff_values(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        out = {}
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            out.update(diff_values(a, b, f"{prefix}.{i}" if prefix else str(i)))
        return out
    if old != new:
        return {prefix: [old, new]}
    return {}


@dataclass(frozen=True)
class Plan:
    """``restart`` empty: the change is live (``components`` to the engine, ``tasks`` by a task-process restart)."""

    revision: str
    restart: tuple[str, ...] = ()
    components: dict[str, Any] = field(default_factory=dict)  # program/interlock name -> new params (JSON)
    tasks: tuple[str, ...] = ()  # tasks whose params changed
    diff: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def live(self) -> bool:
        return not self.restart


def _labels(comps: list[Mapping[str, Any]]) -> list[tuple[str, str]]:
    return [(c["name"], c["type"]) for c in comps]


def classify(running: Mapping[str, Any], new: Mapping[str, Any]) -> Plan:
    """The plan that takes ``running`` to ``new`` (both ``validate.describe`` results)."""
    restart: list[str] = []
    diff: dict[str, list[Any]] = {}
    components: dict[str, Any] = {}
    tasks: list[str] = []
    for key, change in diff_values(running["config"], new["config"]).items():
        restart.append(f"{key} changed ({change[0]!r} -> {change[1]!r})")
        diff[key] = change
    for section in COMPONENT_SECTIONS:
        old_c, new_c = running["components"][section], new["components"][section]
        if _labels(old_c) != _labels(new_c):
            was, now = (", ".join(n for n, _ in _labels(c)) or "-" for c in (old_c, new_c))
            restart.append(f"{section}: the components, their types or their order changed ({was} -> {now})")
            continue
        for a, b in zip(old_c, new_c, strict=True):
            d = diff_values(a["params"], b["params"], f"{section}.{a['name']}")
            files = [f for f in {**a["files"], **b["files"]} if a["files"].get(f) != b["files"].get(f)]
            if files and section != TASK_SECTION:  # read once, when the component is built
                restart.append(f"{section} {a['name']!r}: its file {', '.join(files)} changed")
            if files:
                d.update({f"{section}.{a['name']}.file {f}": [a["files"].get(f), b["files"].get(f)] for f in files})
            if not d:
                continue
            diff.update(d)
            if section in LIVE_SECTIONS:
                components[a["name"]] = b["params"]
            elif section == TASK_SECTION:
                tasks.append(a["name"])
            else:
                restart.append(f"{section} {a['name']!r}: " + ", ".join(k.split(".", 2)[2] for k in d) + " changed")
    old_t, new_t = running["tags"], new["tags"]
    if old_t != new_t:
        added = sorted(set(new_t) - set(old_t))
        removed = sorted(set(old_t) - set(new_t))
        retyped = sorted(n for n in set(old_t) & set(new_t) if old_t[n] != new_t[n])
        parts = [
            f"{w} {', '.join(ns)}" for w, ns in (("added", added), ("removed", removed), ("redefined", retyped)) if ns
        ]
        restart.append("the tag set changed: " + "; ".join(parts))
    return Plan(new["revision"], tuple(restart), components, tuple(tasks), diff)
