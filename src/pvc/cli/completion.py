"""Shell completion of VM, node and network names, read from the cluster's ZooKeeper.

The shell waits for these answers while the operator waits for the shell: one short ZooKeeper
session, bounded as a whole (TIMEOUT), and no names at all on any error (unreachable ZooKeeper,
missing credential, a cluster not initialised) rather than an error message in the middle of a
command line. The scripts themselves are typer's (`pvc --install-completion|--show-completion`).
"""

from __future__ import annotations

import typer

TIMEOUT = 2.0  # seconds, the whole query: connect, read, close

# What each kind of name is read from: the children of this pvc.schema.Paths folder.
_FOLDERS = {"vm": "domain_names", "node": "nodes", "network": "networks"}


def cluster_names(kind: str, zookeeper: str | None = None) -> list[str]:
    """The names of ``kind`` (vm | node | network) in the cluster, sorted; [] on any failure.
    ``zookeeper``: the -z given on the command line being completed (None = the CLI's default)."""
    import asyncio

    from pvc.cli.common import zookeeper_address

    async def read() -> list[str]:
        from pvc.schema import Paths
        from pvc.zk import ZK

        zk = ZK(zookeeper_address() if zookeeper is None else zookeeper, session_timeout=10,
                request_timeout=TIMEOUT / 2)
        await zk.start(TIMEOUT / 2)
        try:
            return sorted(await zk.children(getattr(Paths, _FOLDERS[kind])))
        finally:
            await zk.close()

    try:
        return asyncio.run(asyncio.wait_for(read(), TIMEOUT))
    except BaseException:  # noqa: BLE001 - a completion never fails loudly (also not on Ctrl-C)
        return []


def _completer(kind: str):
    def complete(ctx: typer.Context, incomplete: str) -> list[str]:
        # The global options were parsed, but the group callback does not run while completing.
        zookeeper = ctx.find_root().params.get("zookeeper")
        return [n for n in cluster_names(kind, zookeeper) if n.startswith(incomplete)]

    return complete


complete_vm = _completer("vm")
complete_node = _completer("node")
complete_network = _completer("network")

VM_ARG = typer.Argument(..., help="VM name or UUID", autocompletion=complete_vm)
