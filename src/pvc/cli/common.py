"""What every CLI command shares: the ZooKeeper connection, error handling, output."""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Any, NamedTuple, TypeVar

import typer

from pvc.errors import PvcError

T = TypeVar("T")

DEFAULT_ZOOKEEPER = "127.0.0.1:2181"


class Output(str, Enum):
    table = "table"  # for people: the columns that fit 80 columns
    wide = "wide"  # every column (full UUIDs, reasons): may be wider
    json = "json"  # for programs (also what the REST API returns)
    yaml = "yaml"
    name = "name"  # one name per line, for shell loops


OUTPUT_OPTION = typer.Option(Output.table, "--output", "-o",
                             help="table (fits 80 columns), wide (every column), json, yaml, or name (one a line)")


class Settings:
    zookeeper: str | None = os.environ.get("PVC_ZOOKEEPER")  # -z / PVC_ZOOKEEPER; None: zookeeper_address()
    timeout: float = 5.0
    connection: str = ""  # an API connection's name (`-c`, PVC_CONNECTION): then only the API is used


def user_config_file() -> str:
    """``$XDG_CONFIG_HOME/pvc/pvc.yaml`` (default ``~/.config``), beside the API connections."""
    from pvc.api import connections

    return str(connections.path().with_name("pvc.yaml"))


def _daemon_config():
    """This node's pvcd configuration (``PVCD_CONFIG_FILE``, else /etc/pvc/pvcd.yaml), None when the
    file does not exist (not a node); a file that is there but unreadable or invalid is an error."""
    from pvc import config

    path = os.environ.get("PVCD_CONFIG_FILE") or config.DEFAULT_CONFIG_FILE
    if not os.path.exists(path):
        return None
    return config.load_config(path)


def zookeeper_address() -> str:
    """The one place the CLI's ZooKeeper is decided: ``-z``/``PVC_ZOOKEEPER``, else the user's
    pvc.yaml (``zookeeper:``), else this node's pvcd config (``zookeeper.hosts`` with its
    ``zookeeper.auth``), else 127.0.0.1:2181. Files are read only here, when a command connects,
    so a cold start (``--help``, completion scripts) pays nothing for them."""
    if Settings.zookeeper is not None:
        return Settings.zookeeper  # given (even "", which ZK refuses with its own message)
    from pvc.errors import InvalidInput
    from pvc.zk import connection_string, parse_connection

    path = user_config_file()
    try:
        with open(path, "rb") as fh:
            text = fh.read()
    except FileNotFoundError:
        text = None
    except OSError as exc:
        raise InvalidInput(f"config {path}: {exc.strerror}") from None
    if text is not None:
        import msgspec
        import yaml

        class UserConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
            zookeeper: str = ""  # [USER:PASSWORD@]HOST:PORT[,HOST:PORT...]

        try:
            found = msgspec.convert(yaml.safe_load(text) or {}, type=UserConfig)
        except (yaml.YAMLError, msgspec.ValidationError) as exc:
            raise InvalidInput(f"config {path}: {' '.join(str(exc).split())}") from None
        if found.zookeeper:
            try:
                parse_connection(found.zookeeper)
            except InvalidInput as exc:
                raise InvalidInput(f"config {path}: zookeeper: {exc}") from None
            return found.zookeeper
    daemon = _daemon_config()
    if daemon is not None:
        return connection_string(daemon.zookeeper.hosts, daemon.zookeeper.auth)
    return DEFAULT_ZOOKEEPER


def local_node_name() -> str:
    """The node a node command means when none is named: this node's pvcd ``node.name`` (what the
    daemon registers as), else the short host name."""
    import socket

    daemon = _daemon_config()
    return daemon.node_name if daemon is not None else socket.gethostname().split(".")[0]


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


YES_OPTION = typer.Option(False, "--yes", "-y", help="Do not ask (needed when standard input is not a terminal).")


def confirm(action: str, yes: bool) -> None:
    """Before a destruction: ``--yes`` goes ahead; on a terminal, ask "<action>? [y/N]"; without one
    (a script, a pipe) refuse with one line, so nothing is destroyed by a command nobody saw."""
    if yes:
        return
    if not sys.stdin.isatty():
        fail(f"{action}: not confirmed (standard input is not a terminal); add --yes to confirm", 2)
    if not typer.confirm(f"{action}?", default=False):
        fail("not confirmed; nothing changed", 1)


def run(work: Callable[[Any], Awaitable[T]], *, check_schema: bool = True) -> T:
    """Connect to ZooKeeper, run ``work(zk)``, turn any PvcError into one line and an exit code."""
    from pvc import store
    from pvc.zk import ZK

    if Settings.connection:
        fail("this command needs direct ZooKeeper access (--zookeeper); it is not available through an "
             f"API connection ({Settings.connection})", 2)

    async def main() -> T:
        zk = ZK(zookeeper_address(), session_timeout=10, request_timeout=Settings.timeout)
        await zk.start()
        try:
            if check_schema:
                await store.check_schema(zk)
            return await work(zk)
        finally:
            await zk.close()

    return _run_main(main())


def work_begins() -> None:
    """The command's modules are loaded: collect garbage again (pvc.cli.start paused it for the
    imports), without ever scanning the start-up's objects (frozen: they live as long as the process)."""
    import gc

    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def _run_main(main: Awaitable[T]) -> T:
    """Run the command's coroutine; any PvcError becomes one line and its exit code."""
    import asyncio  # here, not at the top: `pvc --help` and shell completion do not need it

    work_begins()
    try:
        return asyncio.run(main)
    except PvcError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


class LocalBackend:
    """Operations run here, straight against ZooKeeper (``--zookeeper``/``PVC_ZOOKEEPER``)."""

    def __init__(self, zk, extras: dict[str, Any] | None = None) -> None:
        from pvc.ops.registry import Context

        self.ctx = Context(zk, actor="zookeeper", extras=extras or {})

    async def call(self, name: str, params: Any) -> Any:
        from pvc.ops import registry

        return await registry.call(self.ctx, name, params)

    def stream(self, name: str, params: Any):
        from pvc.ops import registry

        return registry.stream(self.ctx, name, params)


def run_ops(work: Callable[[Any], Awaitable[T]], *, check_schema: bool = True, extras: dict[str, Any] | None = None) -> T:
    """Run ``work(backend)``: ``await backend.call(name, params)`` / ``async for x in
    backend.stream(name, params)`` reach the operations layer (pvc.ops) directly over ZooKeeper,
    or through the REST API when a connection is chosen. Errors become one line and an exit code.
    ``extras``: handles for local operations (``ceph``: `pvc storage --ceph-conf`'s client)."""
    if Settings.connection:
        return _run_remote(work)
    return run(lambda zk: work(LocalBackend(zk, extras)), check_schema=check_schema)


def _run_remote(work: Callable[[Any], Awaitable[T]]) -> T:
    async def main() -> T:
        from pvc.api import connections
        from pvc.api.client import RemoteBackend

        backend = RemoteBackend(connections.get(Settings.connection), timeout=max(Settings.timeout, 30.0))
        try:
            return await work(backend)
        finally:
            await backend.close()

    return _run_main(main())


def print_json(value: Any) -> None:
    import msgspec

    sys.stdout.buffer.write(msgspec.json.format(msgspec.json.encode(value), indent=2) + b"\n")
    sys.stdout.flush()


def print_yaml(value: Any) -> None:
    """The same document as ``-o json`` (msgspec's builtins), as block YAML in field order."""
    import msgspec
    import yaml

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    sys.stdout.write(yaml.dump(msgspec.to_builtins(value), Dumper=dumper, sort_keys=False,
                               default_flow_style=False, allow_unicode=True))
    sys.stdout.flush()


def print_names(names: Any) -> None:
    for name in names:
        sys.stdout.write(f"{name}\n")
    sys.stdout.flush()


def plural(n: int, word: str, many: str = "") -> str:
    """'1 VM', '2 VMs', '0 VMs'; ``many`` for irregular words ('1 copy', '2 copies')."""
    return f"{n} {word}" if n == 1 else f"{n} {many or word + 's'}"


class Column(NamedTuple):
    """One column of a list: declared once per command; the printer picks the set for ``-o``."""

    header: str
    value: Callable[[Any], Any]  # record -> cell
    style: Callable[[Any], str] | None = None  # cell -> rich style (shown on a terminal only)
    shown: str = "both"  # "both", "table" (narrow only) or "wide" (wide only)


def short_uuid(uuid: str) -> str:
    """The first 8 characters: unique enough to tell VMs apart at a glance (the full one: -o wide)."""
    return uuid[:8]


def show_list(output: Output, records: Any, columns: list[Column], name: Callable[[Any], Any] = lambda r: r.name) -> None:
    """Print a list command's records as ``-o`` asks: json/yaml documents, names, or a table."""
    if output == Output.json:
        return print_json(records)
    if output == Output.yaml:
        return print_yaml(records)
    if output == Output.name:
        return print_names(name(r) for r in records)
    chosen = [c for c in columns if c.shown in ("both", output.value)]
    print_table([c.header for c in chosen], [[c.value(r) for c in chosen] for r in records],
                {i: c.style for i, c in enumerate(chosen) if c.style})


def show_record(output: Output, record: Any, fields: Callable[[], list[tuple[str, Any]]], name: Any = None) -> None:
    """Print an info command's record: json/yaml documents, its name, or aligned ``key: value`` lines
    (``fields()``: the pairs for people; table and wide are the same)."""
    if output == Output.json:
        return print_json(record)
    if output == Output.yaml:
        return print_yaml(record)
    if output == Output.name:
        return print_names([record.name if name is None else name])
    print_fields(fields())


def print_fields(pairs: list[tuple[str, Any]]) -> None:
    """``key: value`` lines with the values aligned one column after the longest key; None and empty
    lists print as ``-``, lists comma-separated, booleans as yes/no. On a terminal a value too long
    for it (a path, many tags) goes on under its column; piped, each stays on one line for grep."""
    import shutil
    import textwrap

    width = max((len(k) for k, _ in pairs), default=0) + 2
    room = shutil.get_terminal_size().columns - width if sys.stdout.isatty() else 0
    for key, value in pairs:
        if value is None or value == [] or value == "":
            value = "-"
        elif isinstance(value, bool):
            value = "yes" if value else "no"
        elif isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value)
        text = str(value)
        lines = textwrap.wrap(text, max(room, 20), break_on_hyphens=False) if 0 < room < len(text) else [text]
        sys.stdout.write(f"{key + ':':<{width}}" + f"\n{'':<{width}}".join(lines) + "\n")
    sys.stdout.flush()


def print_table(columns: list[str], rows: list[list[Any]], styles: dict[int, Callable[[Any], str]] | None = None) -> None:
    """A plain, aligned table; colour (from ``styles``: column -> value -> rich style) only on a
    terminal (rich honours NO_COLOR; piped output carries no escape codes)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in columns:
        table.add_column(col)
    for row in rows:
        cells = []
        for i, value in enumerate(row):
            text = "" if value is None else str(value)
            style = styles.get(i)(value) if styles and i in styles else ""
            cells.append(f"[{style}]{text}[/]" if style else text.replace("[", r"\["))
        table.add_row(*cells)
    console = Console(soft_wrap=True)
    if console.is_terminal:
        return console.print(table)
    console.width = 4096  # piped: never wrap or truncate cells, and no padding after the last cell
    with console.capture() as captured:
        console.print(table)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))
    sys.stdout.flush()


STATE_STYLES = {
    "start": "green", "run": "green", "ready": "green", "primary": "green", "running": "green",
    "stop": "", "shutoff": "", "client": "", "secondary": "blue",
    "fail": "red", "dead": "red", "fenced": "red", "crashed": "red",
    "disable": "blue", "flush": "yellow", "flushed": "blue", "unflush": "yellow",
}


# A VM's state as a sentence says it: "VM q3 is stopped" (the record keeps the short intent words).
STATE_WORDS = {"start": "started", "stop": "stopped", "shutdown": "shutting down", "restart": "restarting",
               "disable": "disabled", "migrate": "migrating", "fail": "failed"}


def state_words(state: str) -> str:
    return STATE_WORDS.get(state, state)


def state_style(value: Any) -> str:
    return STATE_STYLES.get(str(value), "yellow")
