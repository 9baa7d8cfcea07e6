"""A ZooKeeper server (Debian's jar) on 127.0.0.1, standalone or one member of an ensemble, for dev
clusters and tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from pvc.devcluster.proc import free_port, is_running, log_tail, terminate

__all__ = ["ZookeeperServer", "is_running"]

_JARS = [
    "/usr/share/java/zookeeper.jar",
    "/usr/share/java/slf4j-api.jar",
    "/usr/share/java/slf4j-log4j12.jar",
    "/usr/share/java/log4j-1.2.jar",
]

_LOG4J = """\
log4j.rootLogger=INFO, FILE
log4j.appender.FILE=org.apache.log4j.FileAppender
log4j.appender.FILE.File={log}
log4j.appender.FILE.layout=org.apache.log4j.PatternLayout
log4j.appender.FILE.layout.ConversionPattern=%d{{ISO8601}} %-5p [%t:%C{{1}}@%L] - %m%n
"""


def four_letter(address: str, cmd: str = "ruok", timeout: float = 1.0) -> str:
    """Send a ZooKeeper four-letter command and return the whole answer ('' if unreachable)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as s:
            s.sendall(cmd.encode())
            chunks = []
            while chunk := s.recv(4096):  # the server closes after answering
                chunks.append(chunk)
            return b"".join(chunks).decode(errors="replace")
    except OSError:
        return ""


def ensemble_peers(count: int) -> list[tuple[int, int, int, int]]:
    """(index, client port, quorum port, election port) for each member of a new ensemble on loopback."""
    return [(i, free_port(), free_port(), free_port()) for i in range(1, count + 1)]


class ZookeeperServer:
    """A detached ZooKeeper process; config, data and logs all live under ``datadir``.

    The port is chosen at construction so ``address`` is known before ``start`` and
    stays the same across ``restart``. With ``peers`` (every member's index, client, quorum and
    election port) of more than one server it is member ``myid`` of that ensemble.
    """

    def __init__(self, datadir: Path, port: int | None = None, *, myid: int = 1,
                 peers: list[tuple[int, int, int, int]] | None = None) -> None:
        self.datadir = Path(datadir)
        self.port = port or free_port()
        self.myid = myid
        self.peers = peers if peers and len(peers) > 1 else []
        self._pid: int | None = self._recorded_pid()

    def _recorded_pid(self) -> int | None:
        """The server a previous instance started here (so a new instance can stop or restart it)."""
        try:
            pid = int((self.datadir / "zookeeper.pid").read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if str(self.datadir).encode() in cmdline else None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._pid

    @property
    def log_path(self) -> Path:
        return self.datadir / "zookeeper.log"

    def _write_config(self) -> Path:
        (self.datadir / "data").mkdir(parents=True, exist_ok=True)
        cfg = self.datadir / "zoo.cfg"
        cfg.write_text(
            "tickTime=500\ninitLimit=10\nsyncLimit=5\n"
            f"dataDir={self.datadir / 'data'}\n"
            f"clientPort={self.port}\nclientPortAddress=127.0.0.1\n"
            "admin.enableServer=false\n"
            "minSessionTimeout=1000\nmaxSessionTimeout=60000\n"
            # Without the whitelist the server refuses ruok, which is our readiness probe.
            "4lw.commands.whitelist=ruok,stat,mntr,srvr,cons,wchp,wchs\n"
            # An ensemble: every member on loopback; the data directory says which one this is.
            + "".join(f"server.{i}=127.0.0.1:{quorum}:{election}\n" for i, _, quorum, election in self.peers)
        )
        if self.peers:
            (self.datadir / "data" / "myid").write_text(f"{self.myid}\n")
        (self.datadir / "log4j.properties").write_text(_LOG4J.format(log=self.log_path))
        return cfg

    def serving(self) -> bool:
        """True once the server answers clients (an ensemble member: once it is in a quorum)."""
        # "imok" comes as soon as the port is bound, some ms before the server serves
        # sessions; a client that connects in between (aiozk probes with srvr) backs off
        # for about 4 s, so also wait until srvr reports a mode.
        return (four_letter(self.address, "ruok", timeout=0.5) == "imok"
                and "Mode:" in four_letter(self.address, "srvr", timeout=0.5))

    def listening(self) -> bool:
        return four_letter(self.address, "ruok", timeout=0.5) == "imok"

    def start(self, timeout: float = 30, wait: bool = True) -> None:
        """Start the server; with ``wait``, return once it serves (an ensemble member needs a quorum
        of members running for that), else once it listens."""
        if is_running(self._pid):
            if wait:
                self.wait_ready(timeout)
            return
        cfg = self._write_config()
        cmd = [
            "java", "-Xmx256m",
            f"-Dlog4j.configuration=file:{self.datadir / 'log4j.properties'}",
            "-cp", ":".join([str(self.datadir), *_JARS]),
            "org.apache.zookeeper.server.quorum.QuorumPeerMain", str(cfg),
        ]
        with open(self.datadir / "zookeeper.out", "ab") as out:
            # Own session: the server must outlive (and not get the signals of) whoever started it.
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                    start_new_session=True, close_fds=True)
        self._pid = proc.pid
        (self.datadir / "zookeeper.pid").write_text(f"{proc.pid}\n")
        self.wait_ready(timeout, serving=wait)

    def wait_ready(self, timeout: float = 30, serving: bool = True) -> None:
        ready = self.serving if serving else self.listening
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            if not is_running(self._pid):
                break
            time.sleep(0.1)
        status = "exited" if not is_running(self._pid) else f"not ready after {timeout}s"
        self.stop(timeout=2)
        raise RuntimeError(
            f"ZooKeeper on {self.address} {status}; tail of {self.log_path}:\n{log_tail(self.log_path)}\n"
            f"stdout/stderr:\n{log_tail(self.datadir / 'zookeeper.out', 10)}"
        )

    def stop(self, timeout: float = 10) -> None:
        terminate(self._pid, timeout)
        self._pid = None

    def kill(self) -> None:
        """kill -9: a server crash (no clean shutdown, its clients see the connection drop)."""
        if self._pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGKILL)
        self.stop()

    def restart(self, timeout: float = 30) -> None:
        """Stop and start again on the same port with the same data."""
        self.stop()
        self.start(timeout)
