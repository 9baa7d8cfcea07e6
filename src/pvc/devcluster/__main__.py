"""python -m pvc.devcluster up|info|down|sample-vm, and the fault verbs
kill|start|stop|freeze|thaw NODE, zookeeper kill|start INDEX, libvirtd kill|start NODE:
a local pvc cluster for demos, tests and benchmarks."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pvc.devcluster.cluster import DevCluster

# verb -> (help, DevCluster method); each acts on one node's pvcd.
NODE_VERBS = {
    "kill": ("kill -9 NODE's pvcd (a crash; its libvirtd and VMs stay)", "kill_node"),
    "start": ("start NODE's pvcd again and wait until it runs", "start_node"),
    "stop": ("stop NODE's pvcd with SIGTERM and wait until it exited", "stop_node"),
    "freeze": ("SIGSTOP NODE's pvcd (alive but silent, like a stalled host)", "freeze_node"),
    "thaw": ("SIGCONT NODE's pvcd (after freeze)", "thaw_node"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # bad input is one line, as everywhere in pvc (no usage block)
        self.exit(2, f"error: {self.prog}: {message} (see --help)\n")


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m pvc.devcluster", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start ZooKeeper, one libvirtd and one pvcd per node; wait until all run")
    up.add_argument("--nodes", type=int, default=3)
    up.add_argument("--workdir", required=True)
    up.add_argument("--hypervisor", choices=["test", "qemu"], default="test")
    up.add_argument("--coordinators", type=int, default=None, help="the first K nodes are coordinators (default: up to 3)")
    up.add_argument("--zookeeper-servers", type=int, choices=[1, 3], default=None,
                    help="ZooKeeper servers, one per coordinator (default: 3 with at least 3 coordinators, else 1)")
    up.add_argument("--networking", action="store_true",
                    help="give each node's networking a network namespace of its own (client networks, DHCP, DNS)")
    up.add_argument("--storage", choices=["none", "ceph"], default="none",
                    help="ceph: also start a real Ceph cluster (mon, mgr, one OSD) and give every node's libvirt its secret")
    up.add_argument("--fencing", action="store_true",
                    help="give each node a simulated BMC (ipmi_sim) so the primary can fence dead nodes")
    info = sub.add_parser("info", help="show the ZooKeeper servers and each node's config, libvirt URI, "
                                       "console log directory and pids")
    info.add_argument("--workdir", required=True)
    info.add_argument("-o", "--output", choices=["table", "json"], default="table")
    down = sub.add_parser("down", help="stop everything `up` started")
    down.add_argument("--workdir", required=True)
    sample = sub.add_parser("sample-vm", help="print the domain XML of a tiny real guest (QEMU), building it the first time")
    sample.add_argument("name")
    sample.add_argument("--workdir", required=True, help="the cluster whose console log directory the guest logs to")
    sample.add_argument("--memory", type=int, default=128, help="MiB (default: 128)")
    sample.add_argument("--volume", default="", help="POOL/VOLUME: an RBD disk (vda) the guest writes to every second")
    for verb, (text, _) in NODE_VERBS.items():
        p = sub.add_parser(verb, help=text)
        p.add_argument("node")
        p.add_argument("--workdir", required=True)
    for component, target, text in (("zookeeper", "index", "one ZooKeeper server, by its index (server.N)"),
                                    ("libvirtd", "node", "one node's libvirtd")):
        p = sub.add_parser(component, help=f"kill -9 or start {text}")
        p.add_argument("action", choices=["kill", "start"])
        p.add_argument(target)
        p.add_argument("--workdir", required=True)
    args = parser.parse_args(argv)

    cluster = DevCluster(args.workdir)
    try:
        if args.command not in ("up", "sample-vm") and cluster.state is None:
            raise RuntimeError(f"no cluster in {args.workdir}")
        if args.command == "up":
            if args.nodes < 1:
                parser.error("--nodes must be at least 1")
            state = cluster.up(args.nodes, args.hypervisor, args.coordinators, networking=args.networking,
                               fencing=args.fencing, zookeeper_servers=args.zookeeper_servers,
                               storage=args.storage)
            for node in cluster.info():
                print(f"{node['name']}: pvcd pid {node['pvcd_pid']}, libvirt {node['libvirt_uri']}")
            if state.storage == "ceph":  # `pvc storage ...` reads these
                print(f"PVC_CEPH_CONF={cluster.ceph().conf} PVC_CEPH_KEYRING={cluster.ceph().keyring}")
            print(f"PVC_ZOOKEEPER={state.zookeeper}")
        elif args.command == "info":
            nodes = cluster.info()
            if args.output == "json":
                print(json.dumps(nodes, indent=2))
            else:
                print(f"zookeeper: {cluster.state.zookeeper}")
                if nodes and nodes[0].get("ceph_conf"):
                    print(f"ceph: conf {nodes[0]['ceph_conf']}, keyring {nodes[0]['ceph_keyring']}")
                for z in cluster.state.zookeeper_servers:
                    print(f"  server {z.index}: 127.0.0.1:{z.client_port}, pid {z.pid}, on {z.node or '-'}")
                for n in nodes:
                    frozen = " (frozen)" if n["pvcd_frozen"] else ""
                    print(f"{n['name']}: pvcd pid {n['pvcd_pid']}{frozen}, libvirtd pid {n['libvirtd_pid']}, "
                          f"config {n['config']}, libvirt {n['libvirt_uri']}, console logs {n['console_log_directory']}"
                          + (f", api {n['api_url']}" if n.get("api_url") else "")
                          + (f", metrics {n['metrics_url']}" if n.get("metrics_url") else ""))
        elif args.command == "sample-vm":
            from pvc.devcluster.guest import domain_xml

            # Without a cluster yet, the directory a qemu-mode cluster in this workdir will use.
            console = Path(cluster.state.nodes[0].console_log_directory) \
                if cluster.state and cluster.state.nodes else cluster.workdir / "console"
            print(domain_xml(args.name, console, memory_mib=args.memory, volume=args.volume), end="")
        elif args.command == "stop":
            cluster.running_pvcd_pid(args.node)  # not running: say so
            if not cluster.stop_node(args.node):
                raise RuntimeError(f"pvcd on {args.node} did not exit within 10 s of SIGTERM; killed it")
            print(f"{args.node}: pvcd stopped")
        elif args.command in NODE_VERBS:
            before = cluster.node(args.node).pvcd_pid
            getattr(cluster, NODE_VERBS[args.command][1])(args.node)
            now = cluster.node(args.node).pvcd_pid
            print(f"{args.node}: pvcd {args.command}: pid {now or before}" + ("" if now else " (gone)"))
        elif args.command == "zookeeper":
            if not args.index.isdigit():
                raise ValueError(f"bad ZooKeeper server index {args.index!r}: expected one of "
                                 + ", ".join(map(str, cluster.zookeeper_indexes)))
            args.index = int(args.index)
            before = cluster.zookeeper_spec(args.index).pid
            getattr(cluster, f"{args.action}_zookeeper")(args.index)
            now = cluster.zookeeper_spec(args.index).pid
            print(f"zookeeper server {args.index}: {args.action}: pid {now or before}" + ("" if now else " (gone)"))
        elif args.command == "libvirtd":
            before = cluster.node(args.node).libvirtd_pid
            getattr(cluster, f"{args.action}_libvirtd")(args.node)
            now = cluster.node(args.node).libvirtd_pid
            print(f"{args.node}: libvirtd {args.action}: pid {now or before}" + ("" if now else " (gone)"))
        else:
            cluster.down()
            print("stopped")
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        # KeyError's str() is the repr of its argument; show the message itself.
        print(f"error: {exc.args[0] if isinstance(exc, KeyError) else exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
