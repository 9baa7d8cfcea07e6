"""The CLI's start: what it imports (not how long it takes: bench/bench_cli.py prints that), and that
the lazily built command tree (pvc.cli.lazy) is the one typer would build eagerly."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import click
import typer
import typer.main

from pvc.cli.app import PvcGroup, app
from pvc.devcluster.proc import free_port

# Never needed to start the CLI or to read one VM; each costs tens of ms (or needs a daemon's libraries).
HEAVY = {"rich", "textual", "aiohttp", "prometheus_client", "libvirt", "rados", "rbd", "yaml", "structlog"}
OTHER_GROUPS = {m for mods in PvcGroup.groups.values() for m in mods} - {"pvc.cli.vm"}


def imported_by(*argv: str) -> set[str]:
    """The modules ``pvc ARGV`` has imported when it exits, whatever its exit status."""
    proc = subprocess.run([sys.executable, "-c", MODULES_AT_EXIT, *argv], check=False, capture_output=True, text=True, timeout=60)
    return set(proc.stderr.rpartition("modules:")[2].split())


# `pvc` itself (its entry point, which ends with os._exit), telling at exit which modules it imported.
MODULES_AT_EXIT = ("import os, sys; end = os._exit; "
                   "os._exit = lambda code: (print('modules:', *sys.modules, file=sys.stderr), sys.stderr.flush(), end(code)); "
                   "from pvc.cli.start import main; main()")


def test_vm_info_imports_neither_heavy_libraries_nor_other_groups():
    # A port nobody listens on: the command fails to connect, after importing all it needs to read a VM.
    modules = imported_by("--zookeeper", f"127.0.0.1:{free_port()}", "--timeout", "2", "vm", "info", "x")
    assert {"pvc.cli.vm", "pvc.ops.vm", "pvc.zk"} <= modules  # it did get as far as connecting
    assert not {m.split(".")[0] for m in modules} & HEAVY
    assert not modules & OTHER_GROUPS
    assert "pvc.domain_xml" not in modules  # the XML parser is for define/modify only
    assert "pvc.console_log" not in modules  # nor the console-log reader (pvc.ops.registry.GROUPS)
    assert "dataclasses" not in modules  # ~1 ms each, and the module costs more


def test_entry_point_exits_with_the_commands_status_and_flushed_output():
    pvc = [sys.executable, "-m", "pvc.cli.start"]
    down = subprocess.run([*pvc, "--zookeeper", f"127.0.0.1:{free_port()}", "--timeout", "2", "vm", "info", "x"],
                          capture_output=True, text=True, timeout=60)
    assert down.returncode == 3 and down.stderr.startswith("error: cannot connect to ZooKeeper"), down
    version = subprocess.run([*pvc, "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("pvc "), version  # piped: block-buffered
    usage = subprocess.run([*pvc, "vm", "info"], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "Missing argument" in usage.stderr, usage


def test_help_lists_every_group_without_heavy_imports_at_start():
    modules = imported_by("--version")
    assert not {m.split(".")[0] for m in modules} & HEAVY
    assert not modules & (OTHER_GROUPS | {"pvc.cli.vm"})  # each group is imported when a command line needs it
    assert "asyncio" not in modules  # (nor ssl, socket, ...): only a command that talks to the cluster needs it
    proc = subprocess.run([sys.executable, "-c", MODULES_AT_EXIT, "--help"], check=True, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "COLUMNS": "200"})
    for name in [*PvcGroup.groups, "top", "init"]:
        assert f" {name} " in proc.stdout, name
    assert "asyncio" not in proc.stderr.rpartition("modules:")[2].split()


def _tree(cmd: click.Command, ctx: click.Context | None = None) -> dict:
    """Everything help, parsing and completion see of a command, its sub-commands included."""
    ctx = click.Context(cmd, parent=ctx, info_name=cmd.name)
    seen = {"class": type(cmd).__name__ if not isinstance(cmd, click.Group) else "group", "help": cmd.help,
            "short_help": cmd.short_help, "hidden": cmd.hidden, "no_args_is_help": cmd.no_args_is_help,
            "params": [(p.name, tuple(p.opts), tuple(p.secondary_opts), p.required, repr(p.default),
                        getattr(p, "help", None), p.envvar) for p in cmd.params]}
    if isinstance(cmd, click.Group):
        names = cmd.list_commands(ctx)
        seen["commands"] = {n: _tree(cmd.get_command(ctx, n), ctx) for n in names}
        seen["order"] = names
    return seen


def test_lazy_tree_is_the_tree_typer_builds():
    lazy = typer.main.get_command(app)
    eager_app = typer.Typer(help=app.info.help, no_args_is_help=True, pretty_exceptions_enable=False,
                            add_completion=True)
    eager_app.registered_callback = app.registered_callback
    eager_app.registered_commands = list(app.registered_commands)
    for name, modules in PvcGroup.groups.items():
        for module in modules:
            importlib.import_module(module)
        eager_app.add_typer(importlib.import_module(modules[0]).app, name=name)
    eager = typer.main.get_command(eager_app)
    assert _tree(lazy) == _tree(eager)
    assert lazy.list_commands(click.Context(lazy))[:2] == ["top", "init"]
