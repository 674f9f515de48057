"""The scan's side of the command channel for a task tested on its own: the real Gate (runtime/commands.py)
checks each command as the scan would, and the accepted ones are kept in order for the test to read."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from runtime.api import Command
from runtime.commands import CommandsSection, Gate, Refused, Request
from runtime.tasks.base import TaskContext


class GateScan:
    """``TaskContext``'s command function, answered by the real Gate with the site's allowlist."""

    def __init__(self, tasks: Mapping[str, str], allow: Mapping[str, list[str]], max_per_minute: int = 6000) -> None:
        section = CommandsSection.model_validate({"allow": dict(allow), "max_per_minute": max_per_minute})
        self.gate = Gate(dict(tasks), section, False, 20_000)
        self.accepted: list[Command] = []
        self.refused: list[tuple[str, str]] = []  # (kind, reason)
        self.now_us = 0
        self._ids = 0

    async def __call__(self, source: str, kind: str, args: Mapping[str, Any], by: str) -> tuple[bool, str]:
        self._ids += 1
        try:
            c = self.gate.check(Request(f"t-{self._ids}", kind, source, by, dict(args)), self.now_us)
        except Refused as exc:
            self.refused.append((kind, str(exc)))
            return False, str(exc)
        self.accepted.append(c)
        return True, ""

    def modes(self) -> list[Mapping[str, Any]]:
        """The arguments of every accepted mode request, oldest first."""
        return [c.args for c in self.accepted if c.name == "mode_request"]

    def context(self, name: str, events: bool = False) -> TaskContext:
        return TaskContext(
            name, lambda *a: None, dt.datetime(2027, 1, 4), logging.getLogger("t"), command=self, events=events
        )
