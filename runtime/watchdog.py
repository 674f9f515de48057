"""Watchdog supervision: systemd notification (``sdnotify``) and the Linux hardware watchdog.

Both watchdogs answer one question: is the scan alive and on time? The scan calls
:meth:`Supervisor.healthy_cycle` only after a cycle that ran on time, and nothing else ever feeds either
watchdog, so a stuck or starved scan stops the keepalives and systemd (``WatchdogSec=``) or the
hardware timer takes over. Field faults (a dead meter, a tripped inverter) are the safety layer's
business: they give a trip and safe outputs, never a starved watchdog and a reboot loop.

The calls run on the scan thread, so the common path of :meth:`healthy_cycle` is two integer
comparisons; a syscall happens only when a keepalive is due (every ``WATCHDOG_USEC / 2`` for systemd,
every ``timeout / 4`` for the hardware). The notification socket is non-blocking: a wedged systemd can
delay nothing, it only loses a datagram (logged, at most once a minute).

The hardware watchdog must have one owner. When systemd's ``RuntimeWatchdogSec=`` drives
``/dev/watchdog`` (PID 1 holds it open, so opening it here fails with ``EBUSY``), leave
``watchdog.hardware`` out of the site file; the runtime then relies on ``WatchdogSec=`` and systemd
feeds the hardware. See deploy/README.md.

Construct the Supervisor right before the scan loop, after everything else that can fail at start-up:
opening the hardware watchdog arms it, so a start-up that fails after it would reset the machine, and a
start-up that always fails would become a reboot loop.
The scan thread calls ready/healthy_cycle/stopping/close; status() may come from another thread (the
runner's status loop on the I/O thread): the STATUS state has a lock that the scan thread only ever
*tries*, so it never waits for it.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable, Mapping

import sdnotify

from runtime.config import HardwareWatchdog, WatchdogSection

__all__ = ["WDIOC_GETTIMEOUT", "WDIOC_SETTIMEOUT", "Supervisor", "WatchdogError"]

# linux/watchdog.h: WDIOC_SETTIMEOUT = _IOWR('W', 6, int), WDIOC_GETTIMEOUT = _IOR('W', 7, int);
# _IOC(dir, type, nr, size) = dir << 30 | size << 16 | type << 8 | nr, with _IOC_WRITE=1, _IOC_READ=2.
_W = ord("W")
WDIOC_SETTIMEOUT = (3 << 30) | (4 << 16) | (_W << 8) | 6
WDIOC_GETTIMEOUT = (2 << 30) | (4 << 16) | (_W << 8) | 7

# Documentation/watchdog/watchdog-api.rst: any write pings the timer; a 'V' in the last write before
# close() disarms it (the "magic close"), unless the kernel has nowayout.
KEEPALIVE = b"\0"
MAGIC_CLOSE = b"V"
STATUS_MIN_INTERVAL_NS = 1_000_000_000
NOTIFY_ERROR_LOG_INTERVAL_NS = 60_000_000_000


class WatchdogError(RuntimeError):
    """A configured hardware watchdog cannot be used: the runtime must not start unwatched."""


class _Notifier(sdnotify.SystemdNotifier):
    """sdnotify's notifier, connected to the address from *our* environment mapping, non-blocking.

    ``sdnotify.SystemdNotifier`` reads ``os.environ`` itself, connects a blocking socket and hides every
    error; the scan thread needs the opposite on the last two points, so only the connection is made
    here and ``notify()`` (with ``debug=True``: errors raise to the caller, who logs them) is the
    library's.
    """

    def __init__(self, address: str):
        self.debug = True
        if address.startswith("@"):  # abstract namespace (sd_notify(3))
            address = "\0" + address[1:]
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
        try:
            sock.connect(address)
        except OSError:
            sock.close()
            raise
        self.socket = sock

    def close(self) -> None:
        self.socket.close()


def watchdog_interval_ns(env: Mapping[str, str], pid: int, log: logging.Logger) -> int | None:
    """Half of ``WATCHDOG_USEC`` in ns, or None when systemd expects no keepalives from this process.

    Same rules as sd_watchdog_enabled(3): the variable must be a positive integer, and when
    ``WATCHDOG_PID`` is set it must name this process (otherwise the watchdog is meant for another).
    """
    raw = env.get("WATCHDOG_USEC")
    if raw is None:
        return None
    try:
        usec = int(raw)
    except ValueError:
        log.warning("systemd watchdog: WATCHDOG_USEC=%r is not an integer; sending no keepalives", raw)
        return None
    if usec <= 0:
        return None
    owner = env.get("WATCHDOG_PID")
    if owner is not None and owner.strip() != str(pid):
        log.info("systemd watchdog: WATCHDOG_PID=%s is not this process (%d); sending no keepalives", owner, pid)
        return None
    return usec * 1000 // 2


class _Hardware:
    """An open, armed Linux hardware watchdog (or the FIFO/regular file a test stands in for it)."""

    def __init__(self, cfg: HardwareWatchdog, log: logging.Logger):
        self.path = cfg.device
        self.log = log
        self.write_failed = False
        try:
            # O_NONBLOCK: a FIFO without a reader must fail here, not hang the start-up; watchdog
            # drivers ignore the flag.
            self.fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            hint = ""
            if exc.errno == errno.EBUSY:
                hint = (
                    " (another process holds it: systemd's RuntimeWatchdogSec= or a watchdog daemon;"
                    " let one owner feed it and remove watchdog.hardware from the site file)"
                )
            elif exc.errno in (errno.EACCES, errno.EPERM):
                hint = " (permission: see deploy/udev and DeviceAllow= in deploy/README.md)"
            raise WatchdogError(f"hardware watchdog {self.path}: cannot open: {exc.strerror}{hint}") from exc
        timeout_s = cfg.timeout_s
        try:
            if stat.S_ISCHR(os.fstat(self.fd).st_mode):
                timeout_s = self._set_timeout(cfg.timeout_s)
            else:
                log.warning(
                    "hardware watchdog %s is not a character device (a test stand-in?): "
                    "WDIOC_SETTIMEOUT skipped, keepalives every %.3g s",
                    self.path,
                    timeout_s / 4,
                )
        except BaseException:
            self._close_fd()
            raise
        self.timeout_s = timeout_s
        self.feed_interval_ns = timeout_s * 1_000_000_000 // 4
        log.info(
            "hardware watchdog %s armed: timeout %d s, fed every %.3g s from healthy cycles only",
            self.path,
            timeout_s,
            timeout_s / 4,
        )

    def _set_timeout(self, want_s: int) -> int:
        """WDIOC_SETTIMEOUT; the driver may round, and writes back the timeout it actually uses."""
        assert self.fd is not None
        buf = bytearray(struct.pack("i", want_s))
        try:
            fcntl.ioctl(self.fd, WDIOC_SETTIMEOUT, buf, True)
        except OSError as exc:
            if exc.errno == errno.ENOTTY:
                raise WatchdogError(
                    f"hardware watchdog {self.path}: not a watchdog device (WDIOC_SETTIMEOUT: {exc.strerror})"
                ) from exc
            # EOPNOTSUPP/EINVAL: fixed-timeout hardware or a value out of its range; use what it has.
            got = self._get_timeout()
            if got is None:
                raise WatchdogError(
                    f"hardware watchdog {self.path}: cannot set the timeout to {want_s} s "
                    f"({exc.strerror}) nor read it back"
                ) from exc
            self.log.warning(
                "hardware watchdog %s: cannot set timeout %d s (%s); it uses %d s", self.path, want_s, exc.strerror, got
            )
            return got
        got = struct.unpack("i", bytes(buf))[0]
        if got <= 0:
            got = self._get_timeout() or want_s
        if got != want_s:
            self.log.warning("hardware watchdog %s: asked for %d s, the driver uses %d s", self.path, want_s, got)
        return got

    def _get_timeout(self) -> int | None:
        assert self.fd is not None
        buf = bytearray(4)
        try:
            fcntl.ioctl(self.fd, WDIOC_GETTIMEOUT, buf, True)
        except OSError:
            return None
        got = struct.unpack("i", bytes(buf))[0]
        return got if got > 0 else None

    def feed(self) -> None:
        if self.fd is None:
            return
        try:
            os.write(self.fd, KEEPALIVE)
        except OSError as exc:
            if not self.write_failed:  # log once: the scan thread must not flood the journal
                self.write_failed = True
                self.log.error(
                    "hardware watchdog %s: keepalive failed (%s); the machine will reset when it expires",
                    self.path,
                    exc.strerror,
                )
        else:
            if self.write_failed:
                self.write_failed = False
                self.log.info("hardware watchdog %s: keepalives work again", self.path)

    def close(self, clean: bool) -> None:
        if self.fd is None:
            return
        if clean:
            try:
                os.write(self.fd, MAGIC_CLOSE)
            except OSError as exc:
                self.log.error("hardware watchdog %s: magic close failed (%s): it stays armed", self.path, exc.strerror)
            else:
                self.log.info("hardware watchdog %s: disarmed (magic close; a nowayout kernel ignores it)", self.path)
        else:
            self.log.warning(
                "hardware watchdog %s closed without magic close: it stays armed and resets "
                "the machine in %d s unless a restarted runtime feeds it",
                self.path,
                self.timeout_s,
            )
        self._close_fd()

    def _close_fd(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)


class Supervisor:
    """systemd notification and hardware watchdog, fed only from healthy scan cycles."""

    def __init__(
        self,
        cfg: WatchdogSection,
        log: logging.Logger,
        env: Mapping[str, str] = os.environ,
        *,
        clock: Callable[[], int] = time.monotonic_ns,
    ):
        """``clock`` (monotonic ns) rate-limits STATUS; tests pass a fake one. Raises WatchdogError when a
        configured hardware watchdog cannot be opened or is not a watchdog."""
        self._log = log
        self._clock = clock
        self._notifier: _Notifier | None = None
        self._notify_errors = 0
        self._notify_logged_ns: int | None = None
        self._ready_sent = False
        self._status_last_ns: int | None = None
        self._status_sent: str | None = None
        self._status_pending: str | None = None
        self._status_lock = threading.Lock()
        # systemd keepalive cadence; None = no keepalives. _sd_next_ns None = due at the next healthy cycle.
        self._sd_interval_ns: int | None = None
        self._sd_next_ns: int | None = None
        self._hw: _Hardware | None = None
        self._hw_next_ns: int | None = None
        self._closed = False

        if not cfg.systemd:
            log.info("systemd notification disabled in the site file (watchdog.systemd: false)")
        else:
            self._open_notifier(env)
        if cfg.hardware is not None:
            try:
                self._hw = _Hardware(cfg.hardware, log)
            except BaseException:
                self.close(clean=False)
                raise

    # -- systemd ---------------------------------------------------------------------------------------

    def _open_notifier(self, env: Mapping[str, str]) -> None:
        address = env.get("NOTIFY_SOCKET")
        if not address:
            self._log.info(
                "systemd notification off: NOTIFY_SOCKET is not set (not started by systemd with "
                "Type=notify); no READY/STATUS/WATCHDOG messages"
            )
            return
        try:
            self._notifier = _Notifier(address)
        except OSError as exc:
            self._log.error("systemd notification off: cannot connect NOTIFY_SOCKET=%s: %s", address, exc)
            return
        self._sd_interval_ns = watchdog_interval_ns(env, os.getpid(), self._log)
        if self._sd_interval_ns is not None:
            self._log.info("systemd watchdog: WATCHDOG=1 every %.3g s from healthy cycles", self._sd_interval_ns / 1e9)

    def _send(self, state: str) -> None:
        notifier = self._notifier  # one read: close() may clear it from another thread
        if notifier is None:
            return
        try:
            notifier.notify(state)
        except Exception as exc:  # sdnotify with debug=True re-raises whatever the socket raised
            # Logged at most once a minute with a count: a full queue flaps between failure and success.
            self._notify_errors += 1
            now = self._clock()
            if self._notify_logged_ns is None or now - self._notify_logged_ns >= NOTIFY_ERROR_LOG_INTERVAL_NS:
                self._notify_logged_ns = now
                self._log.error(
                    "systemd notification %r failed: %s (%d failures so far; logged at most once a minute)",
                    state.split("=", 1)[0],
                    exc,
                    self._notify_errors,
                )

    def ready(self) -> None:
        """READY=1 once, after the first good cycle: systemd then counts the unit as started."""
        if self._ready_sent:
            return
        self._ready_sent = True
        self._send("READY=1")

    def status(self, text: str) -> None:
        """STATUS= for `systemctl status`, at most once a second; the latest text wins and a text held
        back is sent by a later call (or healthy cycle) once the second has passed."""
        if self._notifier is None:
            return
        with self._status_lock:
            if text == self._status_sent:
                self._status_pending = None
                return
            self._status_pending = text
            self._flush_status(self._clock())

    def _flush_status(self, now_ns: int) -> None:
        """Send the held STATUS text if a second has passed; the caller holds _status_lock."""
        text = self._status_pending
        if text is None:
            return
        if self._status_last_ns is not None and now_ns - self._status_last_ns < STATUS_MIN_INTERVAL_NS:
            return
        self._status_pending = None
        self._status_last_ns = now_ns
        self._status_sent = text
        # One line (a newline would start another assignment in the datagram); sdnotify encodes latin-1,
        # so hand it the UTF-8 bytes as latin-1 characters to get UTF-8 on the wire.
        line = " ".join(text.splitlines())
        self._send("STATUS=" + line.encode("utf-8").decode("latin-1"))

    def stopping(self) -> None:
        """STOPPING=1: systemd shows 'deactivating' and no longer expects keepalives from a clean stop."""
        self._send("STOPPING=1")

    # -- the scan's heartbeat ------------------------------------------------------------------------------

    def healthy_cycle(self, now_ns: int) -> None:
        """Called by the scan after a healthy cycle only (alive and on time). Cheap unless a keepalive
        is due. ``now_ns`` is any monotonic ns clock, the same one on every call."""
        iv = self._sd_interval_ns
        if iv is not None and (self._sd_next_ns is None or now_ns >= self._sd_next_ns):
            self._sd_next_ns = now_ns + iv
            self._send("WATCHDOG=1")
        hw = self._hw
        if hw is not None and (self._hw_next_ns is None or now_ns >= self._hw_next_ns):
            self._hw_next_ns = now_ns + hw.feed_interval_ns
            hw.feed()
        if self._status_pending is not None and self._status_lock.acquire(blocking=False):
            try:  # the scan never waits: if status() holds the lock, the next healthy cycle flushes
                self._flush_status(self._clock())
            finally:
                self._status_lock.release()

    # -- shutdown --------------------------------------------------------------------------------------------

    def close(self, clean: bool) -> None:
        """Disarm the hardware watchdog with the magic close only on a clean stop; then close everything.
        After an unclean stop it stays armed: a restarted runtime must feed it in time, or the machine
        resets."""
        if self._closed:
            return
        self._closed = True
        if self._hw is not None:
            self._hw.close(clean)
            self._hw = None
        if self._notifier is not None:
            self._notifier.close()
            self._notifier = None
        self._sd_interval_ns = None

    @property
    def hardware_timeout_s(self) -> int | None:
        """The timeout the hardware watchdog actually uses (drivers round), None without one."""
        return self._hw.timeout_s if self._hw is not None else None

    @property
    def systemd_watchdog_interval_ns(self) -> int | None:
        """The WATCHDOG=1 cadence (half of WATCHDOG_USEC), None when systemd expects no keepalives."""
        return self._sd_interval_ns
