"""A task process stand-in for the kill test: the AMQP task with its broker unreachable takes events from
the stream into its persistent outbox, says so on stdout, and waits to be killed.

``python -m tests.localapi.amqp_child STATE_DIR FIRST_SEQ COUNT`` (events FIRST_SEQ..FIRST_SEQ+COUNT-1).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from runtime.api import SiteInfo
from runtime.tasks.localapi.amqp import AmqpApi, AmqpApiParams
from tests.localapi.scan import GateScan
from tests.ports import free_port

SITE = SiteInfo("amqp-site", 240.0, 60.0, 20_000)


def event(seq: int) -> dict[str, Any]:
    return {"seq": seq, "k": seq, "t": seq * 0.02, "kind": "trip", "source": "safety", "message": "t", "data": {}}


async def main(state_dir: str, first: int, count: int) -> None:
    url = f"amqp://guest:guest@127.0.0.1:{free_port()}/"  # nobody listens there
    task = AmqpApi("amqp", AmqpApiParams(url=url, state_dir=state_dir, reconnect_s=0.05), SITE)
    cx = GateScan({"amqp": "localapi_amqp"}, {}).context("amqp", events=True)
    runner = asyncio.create_task(task.run(cx))
    for seq in range(first, first + count):
        cx._event(event(seq))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while task.events_seen < count:
        if loop.time() > deadline or runner.done():
            raise SystemExit("the events did not reach the outbox")
        await asyncio.sleep(0.01)  # poll interval
    assert task.outbox is not None
    print(f"stored {task.outbox.events()}", flush=True)
    await runner  # until killed


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
