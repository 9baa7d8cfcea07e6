"""`pvc vm ...`: VM lifecycle."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pvc.cli.common import (OUTPUT_OPTION, YES_OPTION, Column, Output, confirm, fail, run_ops, short_uuid, show_list,
                             show_record, state_style, state_words)
from pvc.cli.completion import VM_ARG, complete_node

app = typer.Typer(help="Manage virtual machines.", no_args_is_help=True)
app.add_typer(__import__("pvc.cli.vm_volume", fromlist=["app"]).app, name="volume")

WAIT = typer.Option(False, "--wait", "-w", help="Return only when the VM reached the state (non-zero exit with the reason if not).")


def _read_xml(path: Path) -> str:
    try:
        return path.read_text() if str(path) != "-" else typer.get_text_stream("stdin").read()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    except UnicodeDecodeError:
        fail(f"{path} is not a text file")


@app.command()
def define(
    file: Path = typer.Argument(..., help="libvirt domain XML (- for standard input)"),
    target: str = typer.Option("", "--target", "-t", help="Node to place the VM on (default: chosen by the selector)."),
    selector: str = typer.Option("", "--selector", "-s", help="mem | memfree | load | vcpus | vms (default: the cluster's)."),
    node_limit: str = typer.Option("", "--node-limit", help="Comma-separated nodes the VM may run on."),
    autostart: bool = typer.Option(False, "--autostart", help="Start the VM when its node becomes ready again."),
    migration_method: str = typer.Option("", "--migration-method",
                                         help="any (default: live, a shutdown migration where live fails) | live (never falls back) | shutdown."),
    start: bool = typer.Option(False, "--start", help="Start the VM once defined."),
):
    """Define a VM from its libvirt XML; it is placed on a node and left stopped (unless --start)."""
    from pvc.ops.vm import DefineParams

    params = DefineParams(xml=_read_xml(file), target=target, selector=selector, node_limit=[n for n in node_limit.split(",") if n],
                          autostart=autostart, migration_method=migration_method, start=start)
    done = run_ops(lambda b: b.call("vm.define", params))
    if done.warning:
        typer.echo(f"warning: {done.warning}", err=True)
    typer.echo(f"Defined VM {done.vm.name} ({done.vm.uuid}) on node {done.vm.node}" + (", starting" if start else ""))


@app.command()
def modify(vm: str = VM_ARG, file: Path = typer.Argument(..., help="new libvirt XML")):
    """Replace a VM's XML (takes effect at its next start); a new <name> renames it (stopped VMs only)."""
    from pvc.ops.vm import ModifyParams

    params = ModifyParams(vm=vm, xml=_read_xml(file))
    dom = run_ops(lambda b: b.call("vm.modify", params))
    typer.echo(f"Modified VM {dom.name}; the new definition applies at its next start")


@app.command()
def undefine(vm: str = VM_ARG,
             delete_volumes: bool = typer.Option(False, "--delete-volumes",
                                                 help="Also remove the VM's RBD volumes (and their snapshots)."),
             yes: bool = YES_OPTION):
    """Remove a stopped VM from the cluster (its RBD volumes stay unless --delete-volumes); asks first unless --yes."""
    from pvc.ops.vm import UndefineParams

    confirm(f"Undefine VM {vm}" + (" and remove its volumes" if delete_volumes else ""), yes)

    done = run_ops(lambda b: b.call("vm.undefine", UndefineParams(vm=vm, delete_volumes=delete_volumes)))
    removed = done.removed_volumes
    typer.echo(f"Undefined VM {done.vm.name} ({done.vm.uuid})" + (
        "" if not delete_volumes else
        f"; removed volumes {', '.join(removed)}" if removed else "; it had no volumes to remove"))


@app.command()
def dump(vm: str = VM_ARG):
    """Print a VM's libvirt XML."""
    from pvc.ops.vm import VmRef

    typer.echo(run_ops(lambda b: b.call("vm.xml", VmRef(vm=vm))).xml.rstrip("\n"))


def _state_command(action: str, doc: str):
    def command(vm: str = VM_ARG, wait: bool = WAIT):
        from pvc.ops.vm import VmAction, WaitParams

        async def work(backend):
            done = await backend.call(f"vm.{action}", VmAction(vm=vm))
            dom = done.vm
            if wait:
                where = f"{dom.node}, then {dom.target_node}" if dom.state == "migrate" else dom.node
                typer.echo(f"Waiting for VM {dom.name} to {action} on node {where}...", err=True)
                dom = await backend.call("vm.wait", WaitParams(vm=dom.uuid, action=action, after_version=done.version))
            return dom

        dom = run_ops(work)
        if wait:
            note = f" ({dom.note})" if dom.note else ""
            typer.echo(f"VM {dom.name} is {'running' if dom.libvirt_state == 'running' else state_words(dom.state)} "
                       f"on node {dom.node}{note}")
        else:
            typer.echo(f"Set VM {dom.name} to {action} on node {dom.node}")

    command.__doc__ = doc
    return command


app.command("start")(_state_command("start", "Start a VM on its node."))
app.command("stop")(_state_command("stop", "Stop a VM at once (power off); also cuts short a hanging shutdown."))
app.command("shutdown")(_state_command("shutdown", "Shut a VM down gracefully (ACPI), forced off after the configured timeout (policy)."))
app.command("restart")(_state_command("restart", "Restart a VM: graceful shutdown, then start (picks up a modified XML)."))
app.command("disable")(_state_command("disable", "Shut a VM down and keep it where it is, out of autostart, flushes and ready, until started again."))


# The default set fits 80 columns with 16-character names; -o wide adds the rest (full UUID, reasons).
VM_COLUMNS = [
    Column("NAME", lambda d: d.name),
    Column("UUID", lambda d: short_uuid(d.uuid), shown="table"),
    Column("UUID", lambda d: d.uuid, shown="wide"),
    Column("STATE", lambda d: d.state, state_style),
    Column("LIBVIRT", lambda d: d.libvirt_state, state_style),
    Column("NODE", lambda d: d.node),
    Column("PREVIOUS", lambda d: d.previous_node or "-", shown="wide"),
    Column("MEMORY", lambda d: f"{d.memory_mib} MiB"),
    Column("VCPUS", lambda d: d.vcpus),
    Column("TAGS", lambda d: ",".join(getattr(d, "tags", [])) or "-", shown="wide"),
    Column("FAILED REASON", lambda d: d.failed_reason or "-", shown="wide"),
]


@app.command("list")
def list_(
    node: Optional[str] = typer.Option(None, "--node", "-n", help="Only VMs on this node.", autocompletion=complete_node),
    state: Optional[str] = typer.Option(None, "--state", "-s", help="Only VMs in this state."),
    tag: Optional[list[str]] = typer.Option(None, "--tag", help="Only VMs carrying this tag (repeat: all must match)."),
    sort: str = typer.Option("name", "--sort", help="name | node | state | memory (largest first)."),
    output: Output = OUTPUT_OPTION,
):
    """List VMs."""
    from pvc.ops.vm import VmFilter

    doms = run_ops(lambda b: b.call("vm.list", VmFilter(node=node or "", state=state or "", tag=tag or [], sort=sort)))
    show_list(output, doms, VM_COLUMNS)
    for d in doms:
        if d.duplicate_on:
            typer.echo(f"warning: VM {d.name} runs on {', '.join(d.duplicate_on)} as well as on {d.node}: "
                       "two copies; stop one with virsh", err=True)


@app.command()
def info(vm: str = VM_ARG, output: Output = OUTPUT_OPTION):
    """Show one VM."""
    from pvc.ops.vm import VmRef

    dom = run_ops(lambda b: b.call("vm.info", VmRef(vm=vm)))

    def fields() -> list:
        import msgspec

        pairs = []
        for key, value in msgspec.structs.asdict(dom).items():
            if key == "duplicate_on" and value:
                value = f"{','.join(value)}  <- TWO COPIES RUNNING"
            elif key == "last_migration" and value is not None:
                m = value
                value = f"{m.method} {m.source} -> {m.target} in {m.seconds:g} s" + (f" ({m.note})" if m.note else "")
            pairs.append((key, value))
        return pairs

    show_record(output, dom, fields)


@app.command()
def meta(
    vm: str = VM_ARG,
    autostart: Optional[bool] = typer.Option(None, "--autostart/--no-autostart",
                                             help="Start the VM when its node becomes ready again."),
    node_limit: Optional[str] = typer.Option(None, "--node-limit", help="Comma-separated nodes the VM may run on.",
                                             autocompletion=complete_node),
    no_node_limit: bool = typer.Option(False, "--no-node-limit", help="The VM may run on any node."),
    selector: Optional[str] = typer.Option(None, "--selector", help="mem | memfree | load | vcpus | vms (\"\": the cluster's)."),
    migration_method: Optional[str] = typer.Option(None, "--migration-method", help="live | shutdown | any."),
    description: Optional[str] = typer.Option(None, "--description", help="One line describing the VM (\"\" clears it)."),
):
    """Change a VM's metadata (also while it runs); a VM outside a new node limit is not moved, only reported."""
    from pvc.ops.vm import MetaParams

    if node_limit is not None and no_node_limit:
        fail("give --node-limit or --no-node-limit, not both")
    limit = [] if no_node_limit else None if node_limit is None else node_limit.split(",")
    params = MetaParams(vm=vm, autostart=autostart, node_limit=limit, selector=selector,
                        migration_method=migration_method, description=description)
    if (autostart, limit, selector, migration_method, description) == (None,) * 5:
        fail("nothing to change; see pvc vm meta --help")
    done = run_ops(lambda b: b.call("vm.meta", params))
    if done.warning:
        typer.echo(f"warning: {done.warning}", err=True)
    typer.echo(f"Changed VM {done.vm.name}'s metadata")


@app.command()
def rename(vm: str = VM_ARG, name: str = typer.Argument(..., help="The new name.")):
    """Rename a stopped VM (its XML's <name>, its console log file and its node's libvirt follow)."""
    from pvc.ops.vm import RenameParams

    dom = run_ops(lambda b: b.call("vm.rename", RenameParams(vm=vm, name=name)))
    typer.echo(f"Renamed VM {vm} to {dom.name}")


tag_app = typer.Typer(help="Label VMs with tags (pvc vm list --tag selects by them).", no_args_is_help=True)
app.add_typer(tag_app, name="tag")


def _tag_command(op: str, done_word: str, doc: str):
    def command(vm: str = VM_ARG, tags: list[str] = typer.Argument(..., help="Tags.")):
        from pvc.ops.vm import TagParams

        dom = run_ops(lambda b: b.call(op, TagParams(vm=vm, tags=tags)))
        typer.echo(f"{done_word} VM {dom.name}: tags {', '.join(dom.tags) or '(none)'}")

    command.__doc__ = doc
    return command


tag_app.command("add")(_tag_command("vm.tag_add", "Tagged", "Add tags to a VM."))
tag_app.command("remove")(_tag_command("vm.tag_remove", "Untagged", "Remove tags from a VM."))


TARGET = typer.Option("", "--target", "-t", help="Destination node (default: chosen by the selector).",
                      autocompletion=complete_node)
SELECTOR = typer.Option("", "--selector", "-s", help="mem | memfree | load | vcpus | vms (default: the VM's, else the cluster's).")


def _migration(mode: str, params, wait: bool) -> None:
    """Request the migration, then (--wait) say what is awaited and follow it (operation vm.wait)."""
    from pvc.ops.vm import WaitParams

    async def work(backend):
        done = await backend.call(f"vm.{mode}", params)
        dom, source = done.vm, done.source
        if wait and done.how == "migrate":
            typer.echo(f"Migrating VM {dom.name} from {source} to {dom.target_node}...", err=True)
            done.vm = await backend.call("vm.wait", WaitParams(vm=dom.uuid, action=mode, after_version=done.version,
                                                              target=dom.target_node))
        elif wait and done.how == "pending":
            done.vm = await backend.call("vm.wait", WaitParams(vm=dom.uuid, action="hand_over",
                                                              after_version=done.version, target=dom.target_node))
            done.how = "handed"
        return done

    done = run_ops(work)
    dom, source, how = done.vm, done.source, done.how
    if how == "reassigned":
        typer.echo(f"VM {dom.name} is not running: reassigned from {source} (fenced) to {dom.node}")
    elif how == "handed":
        if dom.state == "start":
            typer.echo(f"VM {dom.name} is running on {dom.node} (previous node: {dom.previous_node or 'none'})")
        else:
            typer.echo(f"VM {dom.name} is not running: moved from {source} to {dom.node} "
                       f"({source}'s libvirt confirmed it off)")
    elif how == "pending":
        typer.echo(f"VM {dom.name} is not running: the move to {dom.target_node} is recorded; node {source} "
                   f"hands it over once its libvirt confirms the VM is off (--wait follows it)")
    elif wait:
        m = dom.last_migration
        how = f"; {m.method} migration in {m.seconds:g} s" if m else ""
        note = f"; {dom.note}" if dom.note else ""
        typer.echo(f"VM {dom.name} is running on {dom.node} (previous node: {dom.previous_node or 'none'}{how}{note})")
    else:
        typer.echo(f"Migrating VM {dom.name} from {source} to {dom.target_node}")


@app.command()
def migrate(
    vm: str = VM_ARG,
    target: str = TARGET,
    selector: str = SELECTOR,
    force: bool = typer.Option(False, "--force", "-f", help="Migrate a VM that already has a previous node; "
                               "its previous_node is kept (it stays the VM's home for unmigrate)."),
    wait: bool = WAIT,
):
    """Move a VM to another node by its migration method (any: live, else shut down and restart; live; shutdown) and record its current node as previous_node. A VM that is not running is handed over by its node once libvirt there confirms it off. A VM that was already migrated is refused unless --force; a forced migrate does not change previous_node."""
    from pvc.ops.vm import MigrateParams

    _migration("migrate", MigrateParams(vm=vm, target=target, selector=selector, force=force), wait)


@app.command()
def unmigrate(vm: str = VM_ARG, wait: bool = WAIT):
    """Return a migrated VM to its previous node and clear previous_node."""
    from pvc.ops.vm import VmAction

    _migration("unmigrate", VmAction(vm=vm), wait)


@app.command()
def move(vm: str = VM_ARG, target: str = TARGET, selector: str = SELECTOR,
         wait: bool = WAIT):
    """Migrate a VM permanently: like migrate, but previous_node is cleared."""
    from pvc.ops.vm import MoveParams

    _migration("move", MoveParams(vm=vm, target=target, selector=selector), wait)


@app.command("log")
def log_(
    vm: str = VM_ARG,
    lines: Optional[int] = typer.Option(None, "--lines", "-n", min=0,
                                        help="Show the last N lines (default: all; 10 with --follow)."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines as they arrive (Ctrl-C to stop)."),
):
    """Show a VM's serial console log (in $PAGER on a terminal), or follow it live with -f."""
    from pvc.cli import vm_log
    from pvc.ops.vm_log import FollowQuery, LogQuery

    if follow:
        query = FollowQuery(vm=vm, lines=10 if lines is None else lines)
        run_ops(lambda b: vm_log.follow(b.stream("vm.log_follow", query)))
        return
    log = run_ops(lambda b: b.call("vm.log", LogQuery(vm=vm, lines=lines)))
    if not log.lines and not log.partial and not log.console_log_file:
        typer.echo(f"warning: VM {log.vm} has no serial <log file=...>; its console is not logged", err=True)
    vm_log.show(vm_log.render(log, None))
