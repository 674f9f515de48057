"""Local HMI users: names, roles and scrypt password hashes in one JSON file under ``state_dir`` (0600).

No default user and no default password exist: the first user is made on the controller itself, with
``python -m runtime.tasks.hmi.users [--site SITE | --file PATH] add NAME ROLE`` (password on stdin), or by
``add_user`` from a test. scrypt (RFC 7914) with n=2**14, r=8, p=1 is the interactive-login cost that
OWASP's password storage cheat sheet lists as its minimum; ``hashlib.scrypt`` needs no extra package.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Role = Literal["viewer", "operator"]
ROLES: tuple[str, ...] = ("viewer", "operator")
SCHEMA_VERSION = 1
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024  # scrypt takes any length; a bound keeps a login request cheap


class UserError(ValueError):
    """A user file or a user that cannot be used; ``str()`` says which and why."""


@dataclass(frozen=True)
class User:
    name: str
    role: Role


def _hash(password: str, salt: bytes, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024, dklen=32)


def _load(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {"schema_version": SCHEMA_VERSION, "users": {}}
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable users file ({exc})") from exc
    if (
        not isinstance(doc, dict)
        or doc.get("schema_version") != SCHEMA_VERSION
        or not isinstance(doc.get("users"), dict)
    ):
        raise UserError(f"{path}: schema_version {SCHEMA_VERSION} with a users object expected")
    return doc


def add_user(path: Path, name: str, role: str, password: str) -> User:
    """Create or replace ``name`` with ``role`` and ``password``; the file is replaced atomically, 0600."""
    if not NAME_RE.match(name):
        raise UserError(f"user name {name!r}: 1-64 of letters, digits and _.@-")
    if role not in ROLES:
        raise UserError(f"role {role!r}: one of {', '.join(ROLES)}")
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise UserError(f"password: {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    doc = _load(path)
    salt = secrets.token_bytes(16)
    doc["users"][name] = {
        "role": role,
        "scrypt": {
            "n": SCRYPT_N,
            "r": SCRYPT_R,
            "p": SCRYPT_P,
            "salt": base64.b64encode(salt).decode(),
            "hash": base64.b64encode(_hash(password, salt)).decode(),
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".users-")  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return User(name, role)  # type: ignore[arg-type]


class UserStore:
    """Reads the users file at each login, so that a user added while the HMI runs can log in at once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._dummy_salt = secrets.token_bytes(16)

    def verify(self, name: str, password: str) -> User | None:
        """The user if the password is right, else None; an unknown name costs the same scrypt work, so the
        answer time does not tell which names exist."""
        entry = _load(self.path)["users"].get(name) if len(password) <= MAX_PASSWORD else None
        if not isinstance(entry, dict) or entry.get("role") not in ROLES:
            _hash(password[:MAX_PASSWORD], self._dummy_salt)
            return None
        s = entry.get("scrypt", {})
        try:
            salt, want = base64.b64decode(s["salt"]), base64.b64decode(s["hash"])
            got = _hash(password, salt, int(s["n"]), int(s["r"]), int(s["p"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{self.path}: user {name!r} has no usable scrypt entry ({exc})") from exc
        return User(name, entry["role"]) if hmac.compare_digest(got, want) else None

    def role(self, name: str) -> str | None:
        """The role the file gives ``name`` now (None: no such user): a demotion or removal takes effect at
        the next action, not only at the next login."""
        entry = _load(self.path)["users"].get(name)
        return entry.get("role") if isinstance(entry, dict) and entry.get("role") in ROLES else None

    def count(self) -> int:
        return len(_load(self.path)["users"])


def site_users_file(site: Path) -> Path:
    """The ``users_file`` of the first ``hmi`` task of a site file, resolved against the site file's folder."""
    import yaml

    from runtime.tasks.hmi.params import HmiParams

    doc = yaml.safe_load(site.read_text()) or {}
    for t in doc.get("tasks") or []:
        if isinstance(t, dict) and t.get("type") == "hmi":
            f = Path(HmiParams.model_validate(t.get("params") or {}).users_file)
            return f if f.is_absolute() else site.resolve().parent / f
    raise UserError(f"{site}: no task of type hmi")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m runtime.tasks.hmi.users", description="Add or replace an HMI user (password on stdin)."
    )
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--site", type=Path, help="site file whose hmi task names the users file (default: bundled)")
    where.add_argument("--file", type=Path, help="the users file itself")
    sub = ap.add_subparsers(dest="cmd", required=True)
    add = sub.add_parser("add", help="add or replace a user")
    add.add_argument("name")
    add.add_argument("role", choices=ROLES)
    a = ap.parse_args(argv)
    try:
        if a.file is not None:
            path = a.file
        else:
            from runtime.site import bundled_site

            path = site_users_file(a.site or bundled_site())
        if sys.stdin.isatty():
            import getpass

            password = getpass.getpass(f"password for {a.name}: ")
        else:
            password = sys.stdin.readline().rstrip("\r\n")
        add_user(path, a.name, a.role, password)
    except (UserError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{a.name} ({a.role}) written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
