"""`pvc node log NODE [-f] [--lines N]`: a node's recent pvcd log lines from ZooKeeper (pvc.node_log),
shown once or followed live (operations ``nodelog.read``/``nodelog.follow``).

The log lines alone go to standard output; what the lines cannot say goes to standard error: lines the
daemon dropped (ZooKeeper away too long, a burst over the bound) and lines that left the ring before a
follower read them. A follower ends quietly (exit 0) on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import signal
import sys

import typer

from pvc.cli.common import run_ops
from pvc.cli.completion import complete_node
from pvc.cli.node import app


def _note(message: str) -> None:
    sys.stdout.flush()
    print(f"-- {message}", file=sys.stderr, flush=True)


def _lines(n: int) -> str:
    return "1 line" if n == 1 else f"{n} lines"


class _Printer:
    def __init__(self) -> None:
        self.upto: int | None = None  # number of the next line; None before the first chunk

    def chunk(self, chunk) -> None:
        from pvc.node_log import skipped

        if self.upto is not None and skipped(self.upto, chunk):
            _note(f"{_lines(skipped(self.upto, chunk))} left the node's log before they could be read")
        if chunk.dropped:
            _note(f"{_lines(chunk.dropped)} dropped by the node (ZooKeeper unreachable or too many lines)")
        if chunk.lines:
            sys.stdout.write("".join(line + "\n" for line in chunk.lines))
            sys.stdout.flush()
        self.upto = chunk.end


async def _follow(backend, params) -> None:
    import asyncio  # here: `pvc --help` imports this module, and needs no event loop

    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopped.set)
    printer = _Printer()
    stream = backend.stream("nodelog.follow", params)

    async def consume() -> None:
        async for chunk in stream:
            printer.chunk(chunk)

    work = asyncio.ensure_future(consume())
    stop = asyncio.ensure_future(stopped.wait())
    try:
        await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
        if work.done():
            work.result()  # an error (unknown node, ZooKeeper unreachable) becomes its one line
    finally:
        for task in (work, stop):
            task.cancel()
        await asyncio.wait({work, stop})
        await stream.aclose()  # its watch ends with it
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


@app.command("log")
def log_(
    node: str = typer.Argument(..., help="Node name", autocompletion=complete_node),
    lines: int = typer.Option(50, "--lines", "-n", help="Show the last N lines (then, with -f, every new one)."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines as the node logs them (Ctrl-C to stop)."),
):
    """Show a node's recent pvcd log lines (kept in ZooKeeper, bounded), or follow them live with -f."""
    from pvc.ops.nodelog import NodeLogQuery

    params = NodeLogQuery(node=node, lines=lines)
    if follow:
        run_ops(lambda b: _follow(b, params))
        return
    printer = _Printer()
    for chunk in run_ops(lambda b: b.call("nodelog.read", params)):
        printer.chunk(chunk)
