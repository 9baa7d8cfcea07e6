"""`pvc vm log`: a VM's serial console buffer, shown once (in a pager) or followed live.

Following is driven by two ZooKeeper watches, never a poll: the console-log key (the node's tailer
rewrites it when the buffer changes) and the domain record (to say when the VM stops, starts or
moves). Every buffered line has a sequence number, so each new version is diffed by number
(``pvc.console_log.new_lines``): no line is printed twice or skipped, however many arrived between
two versions, unless the buffer scrolled past lines before they could be read, which is said on
standard error with the count. The log lines alone go to standard output.

The follower keeps following when the VM migrates (the key is the same; the target's tailer goes on
with the same numbering) and when it stops (its last lines are written after the stop, and it may be
started again); it says so on standard error. It ends quietly (exit 0) on Ctrl-C or SIGTERM, and
when the VM is undefined.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import TextIO

import msgspec

from pvc.console_log import ConsoleLog, new_lines, tail
from pvc.schema import Domain, Paths

STOPPED = ("stop", "disable", "fail")
CLEAR_LINE = "\r\x1b[K"


def _note(message: str) -> None:
    sys.stdout.flush()
    print(f"-- {message}", file=sys.stderr, flush=True)


def _decode(data: bytes | None) -> ConsoleLog | None:
    try:
        return ConsoleLog.decode(data or b"")
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


async def read_log(zk, uuid: str) -> tuple[Domain, ConsoleLog]:
    from pvc import store

    dom, _ = await store.read_domain(zk, uuid)
    log = _decode(await zk.get_data(Paths.domain_console_log(uuid), b""))
    return dom, log or ConsoleLog()


def render(log: ConsoleLog, lines: int | None) -> str:
    """The static view: the last ``lines`` lines (all when None) and the unterminated last line."""
    shown = list(log.lines) if lines is None else tail(log, lines)
    if log.partial:
        shown.append(log.partial)
    return "".join(f"{line}\n" for line in shown)


def show(text: str) -> None:
    """In the user's pager ($PAGER, else less with -R) on a terminal; plain when piped."""
    if sys.stdout.isatty():
        import click

        click.echo_via_pager(text.removesuffix("\n"))  # click ends the text with a newline itself
    else:
        _write_quietly(_stdout(), text)


def _stdout() -> TextIO:
    """Standard output that never fails on a character the locale cannot encode."""
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")
    return sys.stdout


def _write_quietly(out: TextIO, text: str) -> None:
    try:
        out.write(text)
        out.flush()
    except BrokenPipeError:  # `pvc vm log vm | head`
        _silence_stdout()


def _silence_stdout() -> None:
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except OSError:
        pass


class _Printer:
    """Complete lines as they come; on a terminal also the unterminated last line (a prompt, a
    progress bar), rewritten in place until it is complete. Piped output gets complete lines only."""

    def __init__(self, out: TextIO, tty: bool) -> None:
        self.out, self.tty = out, tty
        self.shown = ""  # the partial line now on the screen

    def lines(self, lines: list[str], skipped: int) -> None:
        parts: list[str] = []
        if skipped:
            if self.shown:
                parts.append(CLEAR_LINE)
                self.shown = ""
            self._flush(parts)
            _note(f"{skipped} line{'s' if skipped != 1 else ''} scrolled out of the buffer before they could be shown")
            parts = []
        for line in lines:
            if self.shown and line.startswith(self.shown):
                parts.append(line[len(self.shown):] + "\n")
            else:
                parts.append((CLEAR_LINE if self.shown else "") + line + "\n")
            self.shown = ""
        self._flush(parts)

    def partial(self, partial: str) -> None:
        if not self.tty or partial == self.shown:
            return
        if partial.startswith(self.shown):
            self._flush([partial[len(self.shown):]])
        else:
            self._flush([CLEAR_LINE + partial])
        self.shown = partial

    def _flush(self, parts: list[str]) -> None:
        if parts:
            self.out.write("".join(parts))
            self.out.flush()


def _is_stopped(dom: Domain) -> bool:
    return dom.state in STOPPED


async def follow(zk, uuid: str, lines: int, out: TextIO | None = None) -> None:
    """Print the last ``lines`` lines, then every new line until Ctrl-C (or the VM is undefined)."""
    from pvc import store

    out = out or _stdout()
    printer = _Printer(out, out.isatty())
    dom, _ = await store.read_domain(zk, uuid)
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, events.put_nowait, ("quit", None))
    watches = [
        zk.watch_data(Paths.domain_console_log(uuid), lambda data, _v: events.put_nowait(("log", data))),
        zk.watch_data(Paths.domain(uuid), lambda data, _v: events.put_nowait(("vm", data))),
    ]
    upto: int | None = None  # sequence number of the next line to print
    try:
        while True:
            kind, data = await events.get()
            if kind == "quit":
                return
            if kind == "vm":
                if data is None:
                    _note(f"VM {dom.name} was undefined")
                    return
                try:
                    dom = _vm_changed(dom, Domain.decode(data))
                except msgspec.DecodeError:
                    pass
                continue
            if data is None and upto is not None:
                continue  # the key is gone: the VM is being undefined (the record watch says so)
            log = _decode(data)
            if log is None:  # unreadable: wait for the next version
                if upto is not None:
                    continue
                log = ConsoleLog()
            if upto is None:
                printer.lines(tail(log, lines), 0)
                upto = log.end
                where = f"on node {dom.node}" if not _is_stopped(dom) else f"(not running: {dom.state})"
                _note(f"following the console of VM {dom.name} {where}; Ctrl-C to stop")
            else:
                step = new_lines(upto, log)
                printer.lines(step.lines, step.skipped)
                upto = step.next
            printer.partial(log.partial)
    except BrokenPipeError:
        _silence_stdout()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        for watch in watches:
            watch.cancel()


def _vm_changed(old: Domain, new: Domain) -> Domain:
    if _is_stopped(new) and not _is_stopped(old):
        reason = f": {new.failed_reason}" if new.failed_reason else ""
        _note(f"VM {new.name} stopped ({new.state}{reason}); still following")
    elif _is_stopped(old) and not _is_stopped(new):
        _note(f"VM {new.name} is starting on node {new.node}")
    elif new.node != old.node:
        _note(f"VM {new.name} moved to node {new.node}")
    return new
