"""A stop that the libraries under a bus task may hide from it.

Python 3.11's ``asyncio.wait_for`` (used by aiomqtt and aio-pika for every broker round trip) swallows a
cancel that lands just as its future completes, and an error raised while a task stops (a goodbye that
times out) looks like a lost link: either keeps a stopped task reconnecting forever, and its stop (a
task-process restart, a test's teardown) hangs. A bus task calls :func:`still_running` before it settles
into a session and before it retries.
"""

from __future__ import annotations

import asyncio


def still_running() -> None:
    """Raise CancelledError if the current task was asked to stop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
