"""The `pvc` command: writes intent into ZooKeeper; the node daemons carry it out."""

from __future__ import annotations

from typing import ClassVar

import typer

from pvc.cli import top
from pvc.cli.common import Settings, run, run_ops
from pvc.cli.lazy import LazyGroup


class PvcGroup(LazyGroup):
    """The groups, imported only when a command line reaches them (see pvc.cli.lazy), in `pvc --help`'s
    order; the later modules of a group add commands to it."""

    groups: ClassVar[dict[str, tuple[str, ...]]] = {
        "node": ("pvc.cli.node", "pvc.cli.node_coordinator", "pvc.cli.node_log"),  # + primary/secondary, log
        "vm": ("pvc.cli.vm",),
        "network": ("pvc.cli.network",),
        "cluster": ("pvc.cli.cluster", "pvc.cli.event", "pvc.cli.acl"),  # + `cluster events`, `cluster acl`
        "event": ("pvc.cli.event",),
        "storage": ("pvc.cli.storage",),
        "token": ("pvc.cli.token",),
        "connection": ("pvc.cli.connection",),
    }


app = typer.Typer(
    cls=PvcGroup,
    help="pvc: manage a KVM cluster (state in ZooKeeper, VMs on libvirt).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish): pvc.cli.completion
)
app.command("top")(top.top)


def _version(show: bool) -> None:
    if show:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"pvc {version('pvc')}")
        except PackageNotFoundError:
            typer.echo("pvc (version unknown: not installed as a package)")
        raise typer.Exit()


@app.callback()
def global_options(
    zookeeper: str | None = typer.Option(None, "--zookeeper", "-z", envvar="PVC_ZOOKEEPER", show_default=False,
                                  help="ZooKeeper [USER:PASSWORD@]HOST:PORT[,HOST:PORT...] (the cluster's "
                                       "credential, if its znodes are protected). Default: ~/.config/pvc/pvc.yaml "
                                       "(zookeeper:), else this node's /etc/pvc/pvcd.yaml, else 127.0.0.1:2181."),
    timeout: float = typer.Option(5.0, "--timeout", help="Seconds any single ZooKeeper request may take."),
    connection: str = typer.Option("", "--connection", "-c", envvar="PVC_CONNECTION",
                                   help="Talk to the cluster's REST API through this saved connection "
                                        "(`pvc connection add`) instead of ZooKeeper."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print pvc's version."),
):
    Settings.zookeeper = zookeeper
    Settings.timeout = timeout
    Settings.connection = connection


@app.command()
def init():
    """Create the cluster layout in ZooKeeper and give every znode the cluster's ACL (safe to repeat)."""
    from pvc import cluster_acl
    from pvc.ops.common import NoParams

    done = run_ops(lambda b: b.call("cluster.init", NoParams()), check_schema=False)
    typer.echo("Initialised the cluster" if done.created else "The cluster was already initialised")
    protected = run(cluster_acl.protect, check_schema=False)
    if protected:
        typer.echo(f"ZooKeeper ACL: {protected.znodes} znodes readable and writable only by "
                   f"{', '.join(protected.users)}")
    else:
        typer.echo("warning: no credential given (USER:PASSWORD@HOST:PORT): the cluster's znodes stay open "
                   "to every ZooKeeper client", err=True)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
