"""The OCPP-J message layer, independent of the OCPP version: payloads are plain camelCase dicts.

The ``ocpp`` package gives the framing, the schemas and the version's ``ChargePoint``; this layer keeps
what the station needs on top of it in one place, for 2.0.1 now and 2.1 next (docs/reference.md "OCPP"):

- payloads stay camelCase dicts end to end: the package's snake/camel conversion breaks 43 field names of
  the 2.1 schemas, and a stored message must be re-sent byte for byte (same message id), so the station
  serialises a CALL once and keeps the text;
- OCPP-J Part 4 Table 8: an action the receiver does not know is ``NotImplemented``, a known one it does
  not support is ``NotSupported``; the package has the two swapped and its 2.1 charge point answers
  nothing at all without a handler, so incoming CALLs are routed here;
- the round trip of every CALL the station sends is measured (the ``ocpp.rtt`` tag).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ocpp.charge_point import ChargePoint as LibChargePoint
from ocpp.exceptions import NotImplementedError as OcppNotImplemented
from ocpp.exceptions import NotSupportedError as OcppNotSupported
from ocpp.exceptions import OCPPError
from ocpp.messages import Call, CallError, CallResult, MessageType, unpack, validate_payload

log = logging.getLogger("v2g_plc.ocpp")

Payload = dict[str, Any]
Handler = Callable[[Payload], Payload | Awaitable[Payload]]


# what runs once the answer being computed went out: per answer task (_PeerMixin.after_this_answer)
_AFTER_ANSWER: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar("after_answer", default=None)


@dataclass(frozen=True)
class Version:
    """One OCPP version as the ``ocpp`` package provides it."""

    name: str  # the package's version string: "2.0.1"
    subprotocol: str  # WebSocket subprotocol (OCPP-J 2.0.1 part 4, 3.1.2)
    module: str  # the package's module: "ocpp.v201"

    def charge_point_class(self) -> type[LibChargePoint]:
        import importlib

        cls: type[LibChargePoint] = importlib.import_module(self.module).ChargePoint
        return cls

    @property
    def actions(self) -> frozenset[str]:
        return _actions(self.module)


@cache
def _actions(module: str) -> frozenset[str]:
    """Every action the version defines: the names of its request schemas."""
    import importlib

    pkg = importlib.import_module(module)
    schemas = Path(pkg.__file__ or "").parent / "schemas"
    return frozenset(p.name[: -len("Request.json")] for p in schemas.glob("*Request.json"))


V201 = Version("2.0.1", "ocpp2.0.1", "ocpp.v201")
V21 = Version("2.1", "ocpp2.1", "ocpp.v21")
VERSIONS: dict[str, Version] = {V21.subprotocol: V21, V201.subprotocol: V201}
"""By subprotocol, in order of preference: the station offers both, the CSMS selects."""


class CallFailed(Exception):
    """The CSMS answered a CALL with a CALLERROR."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code


class BadAnswer(Exception):
    """The CSMS answered a CALL with a CALLRESULT that fails the action's response schema: it received the
    message (the answer carries its id) but said nothing usable."""


def call_text(unique_id: str, action: str, payload: Payload) -> str:
    """The one serialisation of a CALL: what is stored is what is (re)sent."""
    return Call(unique_id, action, payload).to_json()


def parse_call_text(text: str) -> tuple[str, str, Payload]:
    _, unique_id, action, payload = json.loads(text)
    return unique_id, action, payload


def _peer_class(version: Version) -> type[LibChargePoint]:
    return _PEER_CLASSES.setdefault(version.name, type("Peer", (_PeerMixin, version.charge_point_class()), {}))


_PEER_CLASSES: dict[str, type[LibChargePoint]] = {}


class _PeerMixin:
    """Routing and calls with camelCase dicts on top of the package's ``ChargePoint``."""

    _ocpp_version: str
    _call_lock: asyncio.Lock
    _response_queue: asyncio.Queue[Any]
    _response_timeout: float
    id: str

    handlers: Mapping[str, Handler]
    known: frozenset[str]
    on_rtt: Callable[[str, float], None] | None = None
    on_traffic: Callable[[], None] | None = None
    _answering: set[asyncio.Task[None]]

    if TYPE_CHECKING:  # the package's, typed here

        async def _send(self, message: str) -> None: ...
        async def _get_specific_response(self, unique_id: str, timeout: float) -> Any: ...

    def after_this_answer(self, then: Callable[[], None]) -> None:
        """Run ``then`` once the answer the calling handler is computing went out (a reconnect with a new
        password or certificate must not cut its own answer off). Per answer: every CALL is answered in a
        task of its own, whose context holds this, so two answers in flight never take each other's."""
        _AFTER_ANSWER.set(then)

    async def route_message(self, raw_msg: str) -> None:
        if self.on_traffic:
            self.on_traffic()
        try:
            msg = unpack(raw_msg)
        except (OCPPError, RecursionError) as exc:  # RecursionError: JSON nested too deep
            log.warning("%s: unreadable OCPP message from the CSMS (%s): %.200s", self.id, exc, raw_msg)
            return
        if msg.message_type_id == MessageType.Call:
            # answered beside the receive loop, which goes on reading: a handler may wait for the scan or
            # for a CALL of its own (Authorize) without stalling the answers to the station's CALLs
            job = asyncio.get_running_loop().create_task(self._answer(msg))
            self._answering.add(job)
            job.add_done_callback(self._answering.discard)
        elif msg.message_type_id in (MessageType.CallResult, MessageType.CallError):
            self._response_queue.put_nowait(msg)

    async def answered(self) -> None:
        """Wait until every CALL received so far has been answered."""
        while self._answering:
            await asyncio.wait(set(self._answering))

    async def _answer(self, msg: Call) -> None:
        _AFTER_ANSWER.set(None)  # this task's own context (create_task copies it)
        try:
            handler = self.handlers.get(msg.action)
            if handler is None:
                # OCPP-J Table 8 (the package has these two the other way round)
                if msg.action in self.known:
                    raise OcppNotSupported(details={"cause": f"{msg.action} is not supported by this station"})
                raise OcppNotImplemented(details={"cause": f"{msg.action} is not an OCPP {self._ocpp_version} action"})
            await validate_payload(msg, self._ocpp_version)
            result = handler(msg.payload)
            if inspect.isawaitable(result):
                result = await result
            reply = msg.create_call_result(result)
            await validate_payload(reply, self._ocpp_version)
            text = reply.to_json()
        except OCPPError as exc:
            text = msg.create_call_error(exc).to_json()
        except Exception as exc:
            log.exception("%s: handling %s failed", self.id, msg.action)
            text = msg.create_call_error(exc).to_json()  # InternalError
        await self._send(text)
        then = _AFTER_ANSWER.get()
        if then is not None:
            then()

    async def send_call(self, unique_id: str, action: str, text: str) -> Payload:
        """Send a serialised CALL and wait for its answer (one CALL in flight, OCPP-J 4.1.1).

        Raises ``asyncio.TimeoutError`` (not delivered: send it again, the same text), ``CallFailed`` (the
        CSMS answered with a CALLERROR), ``BadAnswer`` (a CALLRESULT that fails the schema) or
        ``ConnectionClosed``.
        """
        async with self._call_lock:
            t0 = time.monotonic()
            await self._send(text)
            response = await self._get_specific_response(unique_id, self._response_timeout)
            rtt = time.monotonic() - t0
        if self.on_rtt:
            self.on_rtt(action, rtt)
        if response.message_type_id == MessageType.CallError:
            assert isinstance(response, CallError)
            raise CallFailed(response.error_code, response.error_description)
        assert isinstance(response, CallResult)
        response.action = action
        try:
            await validate_payload(response, self._ocpp_version)
        except OCPPError as exc:
            raise BadAnswer(f"{action} answered with an invalid payload: {exc}") from exc
        payload: Payload = response.payload
        return payload

    async def request(self, action: str, payload: Payload, unique_id: str | None = None) -> Payload:
        """Validate, serialise and send a CALL that is not stored."""
        uid = unique_id or str(self._unique_id_generator())  # type: ignore[attr-defined]
        call = Call(uid, action, payload)
        await validate_payload(call, self._ocpp_version)
        return await self.send_call(uid, action, call.to_json())


def make_peer(
    version: Version,
    identity: str,
    connection: Any,
    handlers: Mapping[str, Handler],
    *,
    timeout_s: float,
    on_rtt: Callable[[str, float], None] | None = None,
    on_traffic: Callable[[], None] | None = None,
) -> Any:
    """A connected peer speaking ``version``: ``await peer.start()`` runs its receive loop."""
    peer: Any = _peer_class(version)(identity, connection, response_timeout=timeout_s, logger=_QUIET)
    peer.handlers = {a: h for a, h in handlers.items() if a in version.actions}  # 2.1's only over 2.1
    peer._answering = set()
    peer.known = version.actions
    peer.on_rtt = on_rtt
    peer.on_traffic = on_traffic
    return peer


async def validate_call(version: Version, action: str, payload: Payload) -> None:
    """Raise the package's validation error when ``payload`` does not fit the version's schema."""
    await validate_payload(Call("0", action, payload), version.name)


_QUIET = logging.getLogger("v2g_plc.ocpp.frames")
_QUIET.setLevel(logging.WARNING)  # the package logs every frame at INFO
