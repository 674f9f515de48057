"""Waiting for a condition in an asyncio test: poll it with a bounded deadline, never sleep a guessed time."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any


async def until(pred: Callable[[], bool], what: str = "the condition", timeout: float = 10.0) -> None:
    """Return once ``pred()`` holds; fail naming ``what`` after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def cancel_and_wait(task: asyncio.Task[Any], timeout: float = 15.0) -> None:
    """Cancel a running task and wait, bounded, for it to end (a teardown never hangs the suite)."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout)
