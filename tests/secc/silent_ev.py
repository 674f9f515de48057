"""An EV that finds the SECC and then says nothing: the handshake a weak PLC link leaves behind.

It does what an EV does first (SDP, ISO 15118-2 7.10.1 / -20 8.6: a V2GTP SDP request to ff02::1 on UDP
15118, answered with the SECC's address and TCP port), opens the TCP connection (plain, even when the SECC
said TLS, with ``--plain``), then sends nothing, so the SECC's wait for SupportedAppProtocolReq runs out.
With ``--trust ROOT`` it does a TLS 1.3 handshake that trusts only ROOT, with a blocking socket: a TLS stack
that, unlike asyncio's, sends its alert when it turns the SECC's certificate away. Standard library only.
Usage (in the EV's namespace):

    python silent_ev.py IFACE [--tls] [--trust ROOT.pem] [--hold-s S]
"""

from __future__ import annotations

import argparse
import socket
import ssl
import struct
import sys
import time

SDP_PORT = 15118
V2GTP = struct.Struct(">BBHI")  # version 0x01, inverted version 0xFE, payload type, payload length
SDP_REQ, SDP_RES = 0x9000, 0x9001
SECURED_TLS, NO_TLS, TCP = 0x00, 0x10, 0x00


def discover(iface: str, tls: bool, timeout_s: float = 30.0) -> tuple[str, int]:
    """The SECC's (address, port) from SDP, asking again every 0.25 s (the EV's SDP_REQ timeout)."""
    scope = socket.if_nametoindex(iface)
    req = V2GTP.pack(0x01, 0xFE, SDP_REQ, 2) + bytes([SECURED_TLS if tls else NO_TLS, TCP])
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, scope)
        s.settimeout(0.25)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            s.sendto(req, ("ff02::1", SDP_PORT, 0, scope))
            try:
                data, _ = s.recvfrom(64)
            except TimeoutError:
                continue
            _, _, ptype, n = V2GTP.unpack_from(data)
            if ptype == SDP_RES and n == 20:
                addr = socket.inet_ntop(socket.AF_INET6, data[8:24])
                (port,) = struct.unpack_from(">H", data, 24)
                return f"{addr}%{iface}", port
    raise SystemExit("no SDP answer")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("iface")
    ap.add_argument("--tls", action="store_true", help="ask for TLS in SDP (then connect in plain TCP)")
    ap.add_argument("--trust", help="a TLS 1.3 handshake trusting only this root (PEM)")
    ap.add_argument("--hold-s", type=float, default=60.0, help="keep the connection open this long")
    a = ap.parse_args()
    addr, port = discover(a.iface, a.tls or a.trust is not None)
    print(f"SECC at [{addr}]:{port}", flush=True)
    with socket.create_connection((addr, port), timeout=10) as c:
        if a.trust:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_3
            ctx.check_hostname = False  # the SECC's leaf names no host; its chain is what is checked
            ctx.load_verify_locations(a.trust)
            try:
                ctx.wrap_socket(c).close()
                print("TLS handshake completed", flush=True)
            except ssl.SSLError as exc:
                print(f"TLS handshake failed: {exc}", flush=True)  # the alert went to the SECC
            return 0
        if a.tls:
            c.sendall(b"not a TLS ClientHello\r\n")  # what a plain-TCP EV sends to a TLS port
        c.settimeout(a.hold_s)
        try:
            while c.recv(4096):  # until the SECC closes the connection, or hold_s
                pass
        except (TimeoutError, ConnectionError):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
