"""The `pvc` command: writes intent into ZooKeeper; the node daemons carry it out."""

from __future__ import annotations

import typer

from pvc.cli import cluster, event, node, vm
from pvc.cli import network, node_coordinator  # noqa: F401  (node_coordinator adds `pvc node primary/secondary`)
from pvc.cli import node_log, top  # noqa: F401  (node_log adds `pvc node log`)
from pvc.cli import acl  # noqa: F401  (adds `pvc cluster acl`)
from pvc.cli.common import Settings, run, run_ops

app = typer.Typer(
    help="pvc: manage a KVM cluster (state in ZooKeeper, VMs on libvirt).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish): pvc.cli.completion
)
app.add_typer(node.app, name="node")
app.add_typer(vm.app, name="vm")
app.add_typer(network.app, name="network")
app.add_typer(cluster.app, name="cluster")
app.add_typer(event.app, name="event")
app.add_typer(__import__("pvc.cli.storage", fromlist=["app"]).app, name="storage")
app.command("top")(top.top)
app.add_typer(__import__("pvc.cli.token", fromlist=["app"]).app, name="token")
app.add_typer(__import__("pvc.cli.connection", fromlist=["app"]).app, name="connection")


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
