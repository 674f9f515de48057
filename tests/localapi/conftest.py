"""Real peers for the local API tests: a mosquitto and a RabbitMQ broker, each on free loopback ports with
a private configuration and data directory, never a system instance.

A missing peer skips with the command that installs it, and fails when ``V2G_REQUIRE_PEERS=1`` (CI).
(``need_peer`` finds the executable; tests/peers.py decides between skip and fail.)
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers import require
from tests.ports import free_port, free_ports

INSTALL = "apt-get install -y mosquitto rabbitmq-server"


def need_peer(executable: str) -> str:
    """The path of a peer's executable; skip (or fail under V2G_REQUIRE_PEERS=1) when it is missing."""
    # /usr/lib/rabbitmq/bin first: Debian's /usr/sbin/rabbitmq-server wrapper switches to the rabbitmq
    # user when started as root, which then cannot use the test's private directories.
    found = shutil.which(executable, path="/usr/lib/rabbitmq/bin:" + os.environ.get("PATH", "") + ":/usr/sbin")
    require(executable, found is not None, INSTALL)
    assert found is not None
    return found


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout_s: float) -> None:
    """Poll until ``port`` accepts connections (bounded); raise with the peer's output when it died."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not accept connections within {timeout_s:.0f} s") from None
            time.sleep(0.02)  # poll interval of the readiness loop


def stop_group(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """Stop a peer and everything it started (its own process group), bounded: TERM, then KILL."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the group may hold children (epmd, erl_child_setup)
    except ProcessLookupError:
        pass
    proc.wait(timeout=timeout_s)


class Mosquitto:
    """A private mosquitto; with ``tls`` (a directory holding ca.pem, server.pem/.key) its listener speaks
    TLS only and, with ``client_cert``, lets in only clients whose certificate that CA signed."""

    def __init__(
        self, tmp: Path, users: dict[str, str] | None = None, tls: Path | None = None, client_cert: bool = False
    ) -> None:
        self.exe = need_peer("mosquitto")
        self.port = free_port()
        self.conf = tmp / "mosquitto.conf"
        # run as whoever runs the tests (as root mosquitto would switch to its own user, which cannot read
        # the private password file)
        conf = f"listener {self.port} 127.0.0.1\npersistence false\nuser {getpass.getuser()}\n"
        if tls is not None:
            conf += f"cafile {tls / 'ca.pem'}\ncertfile {tls / 'server.pem'}\nkeyfile {tls / 'server.key'}\n"
            if client_cert:  # the certificate's CN is the client's identity at the broker
                conf += "require_certificate true\nuse_identity_as_username true\n"
        if users:  # credentials required: anonymous clients are refused
            pw = tmp / "passwords"
            pw.write_text("")
            for user, password in users.items():
                subprocess.run([need_peer("mosquitto_passwd"), "-b", str(pw), user, password], check=True, timeout=10)
            pw.chmod(0o600)
            conf += f"allow_anonymous false\npassword_file {pw}\n"
        else:
            conf += "allow_anonymous true\n"
        self.conf.write_text(conf)
        self.log = tmp / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [self.exe, "-c", str(self.conf)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_port(self.port, self.proc, "mosquitto", 10)

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc)
            self.proc = None


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


class RabbitMQ:
    """One private RabbitMQ node: its own node name, AMQP and distribution ports, data and log dirs."""

    def __init__(self, tmp: Path, tls: Path | None = None) -> None:
        """With ``tls`` (a directory holding ca.pem, server.pem/.key) a second listener on ``tls_port``
        speaks TLS and takes only clients with a certificate from that CA."""
        self.exe = need_peer("rabbitmq-server")
        self.port, self.dist_port, self.epmd_port, self.tls_port = free_ports(4)
        self.tls = tls
        self.tmp = tmp
        self.node = f"v2gtest{self.port}@localhost"
        self.proc: subprocess.Popen[bytes] | None = None
        self.epmd: subprocess.Popen[bytes] | None = None
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def env(self) -> dict[str, str]:
        (self.tmp / "mnesia").mkdir(exist_ok=True)
        (self.tmp / "log").mkdir(exist_ok=True)
        conf = self.tmp / "rabbitmq.conf"
        text = f"listeners.tcp.1 = 127.0.0.1:{self.port}\nloopback_users = none\n"
        if self.tls is not None:
            text += (
                f"listeners.ssl.1 = 127.0.0.1:{self.tls_port}\n"
                f"ssl_options.cacertfile = {self.tls / 'ca.pem'}\n"
                f"ssl_options.certfile = {self.tls / 'server.pem'}\n"
                f"ssl_options.keyfile = {self.tls / 'server.key'}\n"
                "ssl_options.verify = verify_peer\n"
                "ssl_options.fail_if_no_peer_cert = true\n"
            )
        conf.write_text(text)
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),  # a private epmd too: never the system's
            "RABBITMQ_CONFIG_FILE": str(conf.with_suffix("")),
            "RABBITMQ_MNESIA_BASE": str(self.tmp / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.tmp / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.tmp / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.tmp / "rabbit.pid"),
            "RABBITMQ_FEATURE_FLAGS_FILE": str(self.tmp / "feature_flags"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(self.tmp / "plugins_expand"),
            "RABBITMQ_QUORUM_DIR": str(self.tmp / "quorum"),
            "RABBITMQ_STREAM_DIR": str(self.tmp / "stream"),
            "ERL_CRASH_DUMP": str(self.tmp / "erl_crash.dump"),
            "HOME": str(self.tmp),  # the Erlang cookie lives here
        }

    def start(self, timeout_s: float = 90) -> None:
        (self.tmp / "enabled_plugins").write_text("[].\n")
        # Our own epmd in the foreground, so the teardown stops it: left to Erlang, `epmd -daemon` detaches
        # from the process group and outlives the test.
        epmd = shutil.which("epmd", path="/usr/lib/erlang/bin:" + os.environ.get("PATH", "")) or "epmd"
        self.epmd = subprocess.Popen(
            [epmd, "-port", str(self.epmd_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_port(self.epmd_port, self.epmd, "epmd", 10)
        with open(self.tmp / "server.out", "ab") as out:
            self.proc = subprocess.Popen(
                [self.exe],
                env=self.env(),
                cwd=self.tmp,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_port(self.port, self.proc, "rabbitmq-server", timeout_s)
        except RuntimeError as exc:
            tail = (self.tmp / "server.out").read_text(errors="replace")[-2000:]
            self.stop()
            raise RuntimeError(f"{exc}\n{tail}") from None

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc, 20)
            self.proc = None
        if self.epmd is not None:
            stop_group(self.epmd)
            self.epmd = None


@pytest.fixture(scope="module")
def rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQ]:
    broker = RabbitMQ(tmp_path_factory.mktemp("rabbitmq"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
