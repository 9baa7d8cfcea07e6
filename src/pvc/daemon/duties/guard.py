"""The teardown guard: undo the primary's host changes when its daemon dies without handing over.

A primary adds addresses and runs dnsmasq. If its daemon is killed (kill -9, a crash), nothing in
the daemon can remove them, and the next primary would find the same gateway address still
answering on the dead daemon's node. So while a node is primary, a small ``sh`` child waits on a
pipe from the daemon. The daemon's death closes the pipe and the guard runs the teardown script
the duties keep current (``ip addr del ...``, ``kill <dnsmasq pid>``); a graceful hand-over writes
``release`` first and the guard exits without doing anything.
"""

from __future__ import annotations

import asyncio
import os
import shlex
from pathlib import Path

from pvc.daemon.context import DaemonContext

_GUARD = 'if IFS= read -r line && [ "$line" = release ]; then exit 0; fi; exec sh "$0"'


class TeardownGuard:
    def __init__(self, ctx: DaemonContext) -> None:
        self.ctx = ctx
        self.log = ctx.log.bind(role="primary")
        self.script = Path(ctx.config.networking.run_directory) / "primary-teardown.sh"
        self._entries: dict[str, list[list[str]]] = {}
        self._proc: asyncio.subprocess.Process | None = None

    def _write(self) -> None:
        lines = ["# Written by pvcd: what the primary set up on this node, undone if pvcd dies.\n"]
        for argvs in self._entries.values():
            lines += [shlex.join(argv) + " >/dev/null 2>&1\n" for argv in argvs]
        self.script.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.script.with_suffix(".tmp")
        tmp.write_text("".join(lines))
        os.replace(tmp, self.script)

    def set(self, key: str, commands: list[list[str]]) -> None:
        """Register (or replace) the commands that undo ``key``; [] forgets it."""
        if commands:
            self._entries[key] = commands
        else:
            self._entries.pop(key, None)
        if self._proc is not None:
            self._write()

    async def cleanup(self) -> None:
        """At daemon start: a script left by an earlier daemon is run again (its commands are idempotent)."""
        if self.script.exists():
            self.log.warning("primary_leftovers_removed", script=str(self.script))
            proc = await asyncio.create_subprocess_exec("sh", str(self.script), stdin=asyncio.subprocess.DEVNULL)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
            self.script.unlink(missing_ok=True)

    async def start(self) -> None:
        self._write()
        self._proc = await asyncio.create_subprocess_exec(
            "sh", "-c", _GUARD, str(self.script),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )

    async def release(self, teardown: bool = False) -> None:
        """Stop the guard; with ``teardown`` it runs the script first (a stop that failed)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                proc.stdin.write(b"teardown\n" if teardown else b"release\n")
                await proc.stdin.drain()
                proc.stdin.close()
            except (BrokenPipeError, ConnectionResetError):
                pass
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
        self._entries.clear()
        self.script.unlink(missing_ok=True)
