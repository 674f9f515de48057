"""Sessions, CSRF tokens and the login rate limit of the HMI. Pure bookkeeping with an injected clock
(real monotonic time in the server: sessions and login attempts are about people, not the plant)."""

from __future__ import annotations

import collections
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from runtime.tasks.hmi.users import User

COOKIE = "v2g_hmi"
MAX_SESSIONS = 1000  # the oldest goes first: a flood of logins cannot grow memory without bound


@dataclass
class Session:
    user: User
    csrf: str
    expires: float


class Sessions:
    def __init__(self, lifetime_s: float, clock: Callable[[], float]) -> None:
        self.lifetime_s = lifetime_s
        self.clock = clock
        self._by_token: collections.OrderedDict[str, Session] = collections.OrderedDict()

    def create(self, user: User) -> tuple[str, Session]:
        token = secrets.token_urlsafe(32)
        s = Session(user, secrets.token_urlsafe(32), self.clock() + self.lifetime_s)
        self._by_token[token] = s
        while len(self._by_token) > MAX_SESSIONS:
            self._by_token.popitem(last=False)
        return token, s

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        s = self._by_token.get(token)
        if s is None:
            return None
        if self.clock() >= s.expires:
            del self._by_token[token]
            return None
        return s

    def drop(self, token: str | None) -> None:
        if token:
            self._by_token.pop(token, None)


def csrf_ok(session: Session, sent: str | None) -> bool:
    """The synchroniser-token check (OWASP CSRF cheat sheet): the token the page got with its session must
    come back in a header that a cross-site form cannot set."""
    return sent is not None and hmac.compare_digest(session.csrf.encode(), sent.encode())


class LoginLimiter:
    """At most ``failures`` failed logins per client address within ``window_s``; then refused (429)
    until the oldest failure leaves the window."""

    def __init__(self, failures: int, window_s: float, clock: Callable[[], float]) -> None:
        self.failures = failures
        self.window_s = window_s
        self.clock = clock
        self._failed: dict[str, collections.deque[float]] = {}

    def _recent(self, addr: str) -> collections.deque[float]:
        q = self._failed.setdefault(addr, collections.deque())
        now = self.clock()
        while q and now - q[0] >= self.window_s:
            q.popleft()
        return q

    def retry_after(self, addr: str) -> float:
        """0 when ``addr`` may try now, else the seconds until it may."""
        q = self._recent(addr)
        if len(q) < self.failures:
            return 0.0
        return max(0.0, self.window_s - (self.clock() - q[0]))

    def failed(self, addr: str) -> None:
        self._recent(addr).append(self.clock())
        if len(self._failed) > MAX_SESSIONS:  # forget addresses whose failures all left the window
            for a in [a for a, q in self._failed.items() if not q]:
                del self._failed[a]

    def succeeded(self, addr: str) -> None:
        self._failed.pop(addr, None)
