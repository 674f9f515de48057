"""Runtime start or task-process restart, and the boot reason (runtime/tasks/ocpp/boot.py)."""

from __future__ import annotations

from pathlib import Path

from runtime.tasks.ocpp.boot import classify, machine_boot_id


def test_boot_reasons() -> None:
    first, state = classify(None, "r1", "b1")
    assert first.runtime_start and first.reason == "PowerUp" and state["id"] == "r1"
    again, _ = classify({**state, "accepted": True}, "r1", "b1")
    assert not again.runtime_start and again.accepted  # a task-process restart after the accepted boot
    early, _ = classify(state, "r1", "b1")
    assert not early.runtime_start and not early.accepted and early.reason == "PowerUp"  # boot still owed
    app, _ = classify({**state, "accepted": True}, "r2", "b1")
    assert app.runtime_start and app.reason == "ApplicationReset" and app.stopped_reason == "Reboot"
    remote, _ = classify({**state, "reset": True}, "r2", "b1")
    assert remote.reason == "RemoteReset"
    power, _ = classify({**state, "reset": True}, "r2", "b2")  # the machine booted since
    assert power.reason == "PowerUp" and power.stopped_reason == "PowerLoss"
    assert classify(state, "", "b1")[0].runtime_start  # no runtime id: every start boots


def test_machine_boot_id(tmp_path: Path) -> None:
    assert machine_boot_id(tmp_path / "absent") == ""
    (tmp_path / "id").write_text("abc\n")
    assert machine_boot_id(tmp_path / "id") == "abc"
