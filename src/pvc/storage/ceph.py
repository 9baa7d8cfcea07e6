"""The one adapter to Ceph: runs Ceph's own CLIs (``ceph``, ``rbd``, ``rados``, and ``qemu-img``
for image transfers) as asyncio subprocesses, every call bounded in time, JSON output parsed.

Why the CLIs and not python3-rados/python3-rbd: those bindings are built for Debian's
/usr/bin/python3 only and are not on PyPI, so pvc's virtualenv (made from any Python 3.11) cannot
import them without symlink tricks; and a binding call that hangs (a monitor gone) blocks its
thread with no clean way to cancel it. A subprocess with ``--format json`` needs no binding, is
killed at its deadline, never blocks the event loop, and its errors are Ceph's own one-line
messages. The cost is a process start per call (``rbd``/``rados``: about 0.1 s; the Python
``ceph`` tool: about 0.7 s), which is fine for operator commands and a periodic health probe.

Errors: a Ceph failure is a :class:`CephError` carrying the errno Ceph printed (``(2) No such
file or directory``), so the operations layer can turn the common ones into clear messages; a
call that does not finish in time is :class:`pvc.errors.Unavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
from dataclasses import dataclass
from typing import Any

from pvc.errors import PvcError, Unavailable

_ERRNO = re.compile(r"\((\d+)\) ")


class CephError(PvcError):
    """A Ceph CLI failed; ``errno`` is what it printed (0 when it printed none)."""

    def __init__(self, message: str, errno: int = 0) -> None:
        super().__init__(message)
        self.errno = errno


@dataclass(frozen=True)
class CephClient:
    """How to reach one Ceph cluster: its ceph.conf, the client name (``client.admin``) and that
    client's keyring ("" = the one ceph.conf names). ``timeout``: seconds any one call may take."""

    conf: str
    client: str = "client.admin"
    keyring: str = ""
    timeout: float = 30.0

    @property
    def client_id(self) -> str:
        return self.client.removeprefix("client.")

    def _auth(self) -> list[str]:
        return ["--conf", self.conf, "--name", self.client, *(["--keyring", self.keyring] if self.keyring else [])]

    async def run(self, tool: str, *args: str, timeout: float | None = None, stdin: bytes | None = None,
                  json_out: bool = True) -> Any:
        """Run ``tool`` (ceph, rbd, rados) with this client's auth; parsed JSON (or text) out."""
        timeout = timeout or self.timeout
        cmd = [tool, *self._auth()]
        if tool == "ceph":
            cmd += ["--connect-timeout", str(max(1, int(timeout)))]
        cmd += list(args)
        if json_out:
            cmd += ["--format", "json"]
        out = await run_bounded(cmd, timeout, stdin=stdin, what=f"{tool} {' '.join(args[:3])}")
        if not json_out:
            return out.decode(errors="replace")
        text = out.decode(errors="replace").strip()
        try:
            return json.loads(text) if text else None
        except ValueError:
            raise CephError(f"{tool} {' '.join(args[:3])}: unexpected output {text[:200]!r}") from None

    async def ceph(self, *args: str, timeout: float | None = None, stdin: bytes | None = None) -> Any:
        return await self.run("ceph", *args, timeout=timeout, stdin=stdin)

    async def rbd(self, *args: str, timeout: float | None = None, json_out: bool = True) -> Any:
        return await self.run("rbd", *args, timeout=timeout, json_out=json_out)

    async def pools(self) -> list[str]:
        """Every pool's name (``rados lspools``: the cheapest round trip to the monitors)."""
        return (await self.run("rados", "lspools", json_out=False)).split()

    async def reachable(self, timeout: float | None = None) -> str:
        """"" when a monitor answers this client within ``timeout``, else why not (one line)."""
        try:
            await self.run("rados", "lspools", timeout=timeout, json_out=False)
            return ""
        except PvcError as exc:
            return str(exc)

    def rbd_uri(self, pool: str, volume: str) -> str:
        """The image as qemu-img names it (``rbd:POOL/VOLUME:id=...:conf=...``)."""
        uri = f"rbd:{pool}/{volume}:id={self.client_id}:conf={self.conf}"
        return uri + (f":keyring={self.keyring}" if self.keyring else "")


async def run_bounded(cmd: list[str], timeout: float, *, stdin: bytes | None = None, what: str = "",
                      stdout: Any = asyncio.subprocess.PIPE) -> bytes:
    """Run a command, killing it at ``timeout``; its stdout, or CephError with its last stderr line."""
    what = what or cmd[0]
    if not shutil.which(cmd[0]):
        raise Unavailable(f"`{cmd[0]}` is not installed (Debian: ceph-common, qemu-utils, qemu-block-extra)")
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=stdout, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except asyncio.TimeoutError:
        raise Unavailable(f"Ceph did not answer within {timeout:g} s ({what})") from None
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 5)
    if proc.returncode != 0:
        raise CephError(f"{what}: {error_line(err.decode(errors='replace'))}", errno_of(err.decode(errors="replace")))
    return out or b""


def error_line(stderr: str) -> str:
    """The line of a Ceph CLI's stderr that says what went wrong (not its timestamped log lines)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    plain = [line for line in lines if not re.match(r"^\d{4}-\d\d-\d\dT", line)]
    return (plain or lines or ["failed"])[-1]


def errno_of(stderr: str) -> int:
    found = _ERRNO.findall(stderr)
    return int(found[-1]) if found else 0
