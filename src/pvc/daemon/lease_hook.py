"""dnsmasq's lease script: ``python -m pvc.daemon.lease_hook --zookeeper H --vni N ACTION [MAC IP [HOSTNAME]]``.

dnsmasq (with ``leasefile-ro``) calls it with ``init`` once at start, and expects the lease
database on standard output, read from ZooKeeper; then with ``add``/``old``/``del`` on every lease
change, which it records under ``/networks/<vni>/leases/<mac>``. Exit status 0 on success; a
failure is printed to standard error, which dnsmasq logs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

from pvc.dnsmasq_config import lease_from_script, render_leases
from pvc.schema import Lease, Paths
from pvc.zk import ZK, NodeExists, NoNode


async def _init(zk: ZK, vni: int) -> str:
    path = Paths.network_leases(vni)
    try:
        macs = await zk.children(path)
    except NoNode:
        return ""
    values = await zk.get_many(Paths.network_lease(vni, m) for m in macs)
    now = time.time()
    live = []
    for mac, value in zip(macs, values):
        if not value:
            continue
        lease = Lease.decode(value)
        if lease.expiry and lease.expiry <= now:
            try:
                await zk.delete(Paths.network_lease(vni, mac))
            except NoNode:
                pass
            continue
        live.append(lease)
    return render_leases(live)


async def _record(zk: ZK, vni: int, lease: Lease) -> None:
    path = Paths.network_lease(vni, lease.mac)
    try:
        await zk.put(path, lease.encode())
    except NoNode:  # the leases folder is missing (network created by an older pvc): make it
        try:
            await zk.create(Paths.network_leases(vni))
        except NodeExists:
            pass
        await zk.put(path, lease.encode())


async def run(zookeeper: str, vni: int, args: list[str], env: dict[str, str]) -> str:
    action = args[0] if args else ""
    zk = ZK(zookeeper, session_timeout=10, request_timeout=5)
    await zk.start()
    try:
        if action == "init":
            return await _init(zk, vni)
        mac, ip, hostname = (args[1:] + ["", "", ""])[:3]
        if action == "del" and mac and ":" not in ip:
            try:
                await zk.delete(Paths.network_lease(vni, mac.lower()))
            except NoNode:
                pass
        else:
            lease = lease_from_script(action, mac, ip, hostname, env)
            if lease:
                await _record(zk, vni, lease)
        return ""
    finally:
        await zk.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pvc-lease-hook")
    # [USER:PASSWORD@]HOST:PORT,...: from the environment (the hook exports it), never the command line.
    parser.add_argument("--zookeeper", default=os.environ.get("PVC_ZOOKEEPER"), required="PVC_ZOOKEEPER" not in os.environ)
    parser.add_argument("--vni", type=int, required=True)
    parser.add_argument("args", nargs=argparse.REMAINDER)
    opts = parser.parse_args(argv)
    try:
        out = asyncio.run(run(opts.zookeeper, opts.vni, opts.args, dict(os.environ)))
    except Exception as exc:  # dnsmasq logs what we print
        print(f"pvc lease hook (network {opts.vni}): {exc or type(exc).__name__}", file=sys.stderr)
        return 1
    sys.stdout.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
