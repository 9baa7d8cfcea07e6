"""`pvc cluster acl`: the ZooKeeper credentials the cluster's znodes accept (rotation: add the new
one, switch every config to it, remove the old one; docs/operations.md)."""

from __future__ import annotations

from typing import Optional

import typer

from pvc.cli import cluster
from pvc.cli.common import OUTPUT_OPTION, Output, fail, run, show_record


@cluster.app.command("acl")
def acl(
    add_credential: Optional[str] = typer.Option(
        None, "--add-credential", metavar="USER:PASSWORD",
        help="Let this credential read and write every znode too (first step of a rotation)."),
    remove_credential: Optional[str] = typer.Option(
        None, "--remove-credential", metavar="USER:PASSWORD",
        help="Take this credential off every znode (last step of a rotation; not the one connected with)."),
    output: Output = OUTPUT_OPTION,
):
    """Show which users' credentials the cluster's ZooKeeper ACL accepts, or add/remove one."""
    from pvc import cluster_acl

    if add_credential and remove_credential:
        fail("give --add-credential or --remove-credential, not both")

    async def work(zk):
        if add_credential:
            return await cluster_acl.add(zk, add_credential)
        if remove_credential:
            return await cluster_acl.remove(zk, remove_credential)
        return await cluster_acl.show(zk)

    report = run(work)
    if output in (Output.json, Output.yaml):
        return show_record(output, report, list)
    typer.echo(f"users: {', '.join(report.users) or '- (the cluster is not protected: run `pvc init` with a credential)'}")
    if add_credential or remove_credential:
        typer.echo(f"znodes given the ACL: {report.znodes}")
