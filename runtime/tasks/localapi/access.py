"""Who may talk to the local API: an allowlist of client addresses with a role (defence in depth beside
the firewall, e.g. "port 502 only from the EMS at 192.168.1.50")."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, field_validator

from runtime.api import Params

Role = Literal["read_only", "read_write"]


class AllowEntry(Params):
    address: str = Field(description="client address or network (192.168.1.50, 192.168.1.0/24, ::1)")
    role: Role = Field("read_only", description="read_write may send commands; read_only may only read")

    @field_validator("address")
    @classmethod
    def _network(cls, v: str) -> str:
        try:
            ipaddress.ip_network(v, strict=False)
        except ValueError as exc:
            raise ValueError(f"not an IP address or network: {v!r}") from exc
        return v


def role_of(allow: list[AllowEntry], host: str) -> Role | None:
    """The role of a client address: the most permissive matching entry, None when none matches."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    roles = {e.role for e in allow if ip in ipaddress.ip_network(e.address, strict=False)}
    if "read_write" in roles:
        return "read_write"
    return "read_only" if roles else None
