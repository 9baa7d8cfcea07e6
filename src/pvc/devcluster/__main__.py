"""python -m pvc.devcluster up|info|down|sample-vm: a local pvc cluster for demos, tests and benchmarks."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pvc.devcluster.cluster import DevCluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pvc.devcluster", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start ZooKeeper, one libvirtd and one pvcd per node; wait until all run")
    up.add_argument("--nodes", type=int, default=3)
    up.add_argument("--workdir", required=True)
    up.add_argument("--hypervisor", choices=["test", "qemu"], default="test")
    up.add_argument("--coordinators", type=int, default=None, help="the first K nodes are coordinators (default: up to 3)")
    up.add_argument("--networking", action="store_true",
                    help="give each node's networking a network namespace of its own (client networks, DHCP, DNS)")
    up.add_argument("--fencing", action="store_true",
                    help="give each node a simulated BMC (ipmi_sim) so the primary can fence dead nodes")
    info = sub.add_parser("info", help="show each node's config, libvirt URI, console log directory and pvcd pid")
    info.add_argument("--workdir", required=True)
    info.add_argument("-o", "--output", choices=["table", "json"], default="table")
    down = sub.add_parser("down", help="stop everything `up` started")
    down.add_argument("--workdir", required=True)
    sample = sub.add_parser("sample-vm", help="print the domain XML of a tiny real guest (QEMU), building it the first time")
    sample.add_argument("name")
    sample.add_argument("--workdir", required=True, help="the cluster whose console log directory the guest logs to")
    sample.add_argument("--memory", type=int, default=128, help="MiB (default: 128)")
    args = parser.parse_args(argv)

    cluster = DevCluster(args.workdir)
    try:
        if args.command == "up":
            if args.nodes < 1:
                parser.error("--nodes must be at least 1")
            state = cluster.up(args.nodes, args.hypervisor, args.coordinators, networking=args.networking,
                               fencing=args.fencing)
            for node in cluster.info():
                print(f"{node['name']}: pvcd pid {node['pvcd_pid']}, libvirt {node['libvirt_uri']}")
            print(f"PVC_ZOOKEEPER={state.zookeeper}")
        elif args.command == "info":
            if cluster.state is None:
                raise RuntimeError(f"no cluster in {args.workdir}")
            nodes = cluster.info()
            if args.output == "json":
                print(json.dumps([{**n, "zookeeper": cluster.state.zookeeper} for n in nodes], indent=2))
            else:
                print(f"zookeeper: {cluster.state.zookeeper} (pid {cluster.state.zookeeper_pid})")
                for n in nodes:
                    print(f"{n['name']}: pvcd pid {n['pvcd_pid']}, config {n['config']}, libvirt {n['libvirt_uri']}, "
                          f"console logs {n['console_log_directory']}")
        elif args.command == "sample-vm":
            from pvc.devcluster.guest import domain_xml

            # Without a cluster yet, the directory a qemu-mode cluster in this workdir will use.
            console = Path(cluster.state.nodes[0].console_log_directory) \
                if cluster.state and cluster.state.nodes else cluster.workdir / "console"
            print(domain_xml(args.name, console, memory_mib=args.memory), end="")
        else:
            cluster.down()
            print("stopped")
    except (RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
