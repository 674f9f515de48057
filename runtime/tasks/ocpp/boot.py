"""A runtime start or a task-process restart: what the station owes its CSMS when its task starts.

A runtime start (a new scan process) is a reboot of the charging station: BootNotification with its
reason, and a transaction left open by the previous runtime ends (E01/E06). A restart of the task process
alone is not (docs/design.md "Processes"): no BootNotification, the transaction goes on. The two are told
apart by ``TaskContext.runtime_id`` (one per runtime start) stored beside the queue, never by the cycle
clock, which a site run at ``--speed`` advances by minutes while a task process starts.

BootReasonEnumType (OCPP 2.0.1 part 2, B01): the first start, or the first after the machine booted
(Linux's boot id changed), is ``PowerUp``; a runtime start after a Reset the CSMS asked for is
``RemoteReset``; any other runtime start on the same machine boot (a crash, an operator restart, an
upgrade) is ``ApplicationReset``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


@dataclass(frozen=True)
class Start:
    runtime_start: bool  # BootNotification due and an open transaction ends
    reason: str  # BootReasonEnumType of that BootNotification
    accepted: bool  # this runtime's boot was accepted already (a task-process restart after it)

    @property
    def stopped_reason(self) -> str:
        """ReasonEnumType for a transaction the previous runtime left open."""
        return "PowerLoss" if self.reason == "PowerUp" else "Reboot"


def machine_boot_id(path: Path = BOOT_ID) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""  # not Linux: every runtime start counts as a power-up


def classify(stored: dict[str, Any] | None, runtime_id: str, boot_id: str) -> tuple[Start, dict[str, Any]]:
    """This start, and the state to store for it. An empty ``runtime_id`` (no runtime around the task)
    makes every start a runtime start."""
    if runtime_id and stored and stored.get("id") == runtime_id:
        return Start(False, str(stored.get("reason", "PowerUp")), bool(stored.get("accepted"))), stored
    if not stored or not boot_id or stored.get("boot") != boot_id:
        reason = "PowerUp"
    elif stored.get("reset"):
        reason = "RemoteReset"
    else:
        reason = "ApplicationReset"
    return Start(True, reason, False), {"id": runtime_id, "boot": boot_id, "reason": reason, "accepted": False}
