"""The `pvc` command: writes intent into ZooKeeper; the node daemons carry it out."""

from __future__ import annotations

import typer

from pvc.cli import cluster, event, node, vm
from pvc.cli import network, node_coordinator  # noqa: F401  (node_coordinator adds `pvc node primary/secondary`)
from pvc.cli.common import DEFAULT_ZOOKEEPER, Settings, run

app = typer.Typer(
    help="pvc: manage a KVM cluster (state in ZooKeeper, VMs on libvirt).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(node.app, name="node")
app.add_typer(vm.app, name="vm")
app.add_typer(network.app, name="network")
app.add_typer(cluster.app, name="cluster")
app.add_typer(event.app, name="event")
app.add_typer(__import__("pvc.cli.storage", fromlist=["app"]).app, name="storage")


@app.callback()
def global_options(
    zookeeper: str = typer.Option(DEFAULT_ZOOKEEPER, "--zookeeper", "-z", envvar="PVC_ZOOKEEPER",
                                  help="ZooKeeper HOST:PORT[,HOST:PORT...]"),
    timeout: float = typer.Option(5.0, "--timeout", help="Seconds any single ZooKeeper request may take."),
):
    Settings.zookeeper = zookeeper
    Settings.timeout = timeout


@app.command()
def init():
    """Create the cluster layout in ZooKeeper (safe to repeat)."""
    from pvc import store

    created = run(store.init_cluster, check_schema=False)
    typer.echo("Initialised the cluster" if created else "The cluster was already initialised")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
