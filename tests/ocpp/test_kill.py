"""kill -9 of the process that holds the queue, at random points: nothing lost, nothing duplicated except
byte-identical resends (same message id, same seqNo)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from runtime.tasks.ocpp.local_csms import LocalCsms
from tests.ports import free_port

PW = "0123456789abcdef-operator"
ROOT = Path(__file__).resolve().parents[2]


async def _child(url: str, state: Path, start_us: int, *extra: str) -> asyncio.subprocess.Process:
    with (state.parent / "children.log").open("ab") as err:  # the evidence when an assertion fails
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.ocpp.kill_child", "--url", url, "--state", str(state),
            "--start-us", str(start_us), *extra, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=err,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip


@pytest.mark.slow
def test_kill_9_at_random_points_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    state = tmp_path / "state"

    async def main() -> None:
        csms = await LocalCsms("127.0.0.1", free_port(), passwords={"KILL-1": PW}).start()
        try:
            for round_ in range(8):
                p = await _child(csms.url, state, (round_ + 1) * 1_000_000_000)
                assert p.stdout is not None
                await asyncio.wait_for(p.stdout.readline(), 30)  # it publishes: from here on, kill anywhere
                await asyncio.sleep(rng.uniform(0.0, 1.5))  # the random kill point, not a synchronisation
                p.send_signal(signal.SIGKILL)
                await asyncio.wait_for(p.wait(), 10)
            p = await _child(csms.url, state, 100 * 1_000_000_000, "--drain")
            out, _ = await asyncio.wait_for(p.communicate(), 60)
            assert b"drained" in out
        finally:
            await csms.close()
        return csms

    try:
        csms = asyncio.run(main())
    except BaseException:
        print(f"seed {seed}", (tmp_path / "children.log").read_text(errors="replace")[-6000:])
        raise
    print(f"seed {seed}", (tmp_path / "children.log").read_text(errors="replace")[-6000:])  # shown on failure
    # only this station: a test run beside this one may reconnect to a port this CSMS took over
    tx = [r for r in csms.actions("TransactionEvent") if r.identity == "KILL-1"]
    assert len(tx) > 50, f"seed {seed}: too little traffic to prove anything ({len(tx)})"
    by_tx: dict[str, dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
    by_uid: dict[str, set[str]] = defaultdict(set)
    for r in tx:
        by_tx[r.payload["transactionInfo"]["transactionId"]][r.payload["seqNo"]].add(r.raw)
        by_uid[r.unique_id].add(r.raw)
    assert all(len(texts) == 1 for texts in by_uid.values()), f"seed {seed}: a message id with two texts"
    for tid, seqs in by_tx.items():
        assert sorted(seqs) == list(range(len(seqs))), f"seed {seed}: gap in transaction {tid}: {sorted(seqs)}"
        assert all(len(texts) == 1 for texts in seqs.values()), f"seed {seed}: seqNo reused with other content"
        last = json.loads(next(iter(seqs[len(seqs) - 1])))[3]
        assert last["eventType"] == "Ended", f"seed {seed}: transaction {tid} not ended"
        first = json.loads(next(iter(seqs[0])))[3]
        assert first["eventType"] == "Started"
