"""Small process helpers shared by the dev-cluster components."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path


# Ports handed out by this process: the kernel may offer a port again once its probe socket is
# closed, and two components given the same port fight over it when one restarts (a killed
# ZooKeeper's quorum port taken by a pvcd's API retrying its bind).
_GIVEN: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the kernel picks it) and that this process
    has not handed out before."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


def free_port_range(count: int) -> int:
    """The first of ``count`` consecutive ports that look free and were not handed out before."""
    while True:
        lo = free_port()
        span = set(range(lo + 1, lo + count))
        if lo + count <= 65535 and not span & _GIVEN:
            _GIVEN.update(span)
            return lo


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that is free right now (for a simulated BMC)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_running(pid: int | None) -> bool:
    """True if ``pid`` exists and is not a zombie (a killed child we have not reaped yet)."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state letter follows the ")" that closes the command name (which may hold spaces).
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def is_stopped(pid: int | None) -> bool:
    """True if ``pid`` is stopped by a signal (SIGSTOP: a frozen process)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "T" if pid else False
    except OSError:
        return False


def tcp_peer_ports(pid: int) -> set[int]:
    """Remote ports of the established TCP connections ``pid`` holds (which server it talks to)."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "01" and fields[9] in inodes:  # 01: ESTABLISHED
                    ports.add(int(fields[2].rsplit(":", 1)[1], 16))
    return ports


def _reap(pid: int) -> None:
    # Only our own children can (and must) be reaped; for anything else this is a no-op.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def terminate(pid: int | None, timeout: float = 10.0) -> bool:
    """SIGTERM ``pid``, SIGKILL it after ``timeout`` seconds, and wait until it is gone.
    True when SIGTERM was enough (or nothing ran)."""
    if not pid:
        return True
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(pid)
            if not is_running(pid):
                return sig == signal.SIGTERM
            time.sleep(0.05)
    raise RuntimeError(f"process {pid} is still running after SIGKILL")


def log_tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"(no log at {path})"
