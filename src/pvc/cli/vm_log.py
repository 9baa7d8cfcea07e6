"""`pvc vm log`: a VM's serial console buffer, shown once (in a pager) or followed live.

This module only prints: what to print comes from the operations ``vm.log`` and ``vm.log_follow``
(pvc.ops.vm_log, over the reading API in ``pvc.console_log``), directly or through the REST API. ``follow`` yields the lines in order, each
once, across migrations, daemon restarts and stops; when the ring scrolled past lines before they
could be read it says how many (printed on standard error, as are the notices about the VM: stopped,
starting, moved). The log lines alone go to standard output. It ends quietly (exit 0) on Ctrl-C or
SIGTERM, and when the VM is undefined.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from typing import TextIO

from pvc.console_log import ConsoleLog, Lines, Missed, Notice, Partial, tail

CLEAR_LINE = "\r\x1b[K"


def _note(message: str) -> None:
    sys.stdout.flush()
    print(f"-- {message}", file=sys.stderr, flush=True)


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

    def note(self, message: str) -> None:
        if self.shown:
            self._flush([CLEAR_LINE])
            self.shown = ""
        _note(message)

    def lines(self, lines: list[str]) -> None:
        parts: list[str] = []
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


async def follow(items, out: TextIO | None = None) -> None:
    """Print what the ``vm.log_follow`` operation streams (``items``: its ConsoleItems, directly or
    through the API): the backlog, then every new line until Ctrl-C (or the VM is undefined)."""
    out = out or _stdout()
    printer = _Printer(out, out.isatty())
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    quitting = False

    def quit_() -> None:
        nonlocal quitting
        quitting = True
        task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, quit_)
    try:
        async with contextlib.aclosing(aiter(items)) as stream:
            async for item in stream:
                event = item.event()
                if isinstance(event, Lines):
                    printer.lines(event.lines)
                elif isinstance(event, Partial):
                    printer.partial(event.text)
                elif isinstance(event, Missed):
                    printer.note(event.text)
                elif isinstance(event, Notice):
                    printer.note(event.text + ("; Ctrl-C to stop" if event.kind == "following" else ""))
    except asyncio.CancelledError:
        if not quitting:
            raise
        task.uncancel()
    except BrokenPipeError:
        _silence_stdout()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
