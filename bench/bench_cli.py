"""CLI cold start: `pvc --help` and `pvc vm info X`, each a new process. Prints only.

A standalone ZooKeeper (no pvcd: one node record is written directly) holds one VM. For each command:
wall time and CPU time (user + system of the process) over ``--rounds`` runs, the modules it imports
and whether any heavy one is among them; `python -c pass` is the interpreter's own floor. Wall time
follows the machine's load (printed); CPU time much less so.

Processes run with a bytecode cache (a temporary PYTHONPYCACHEPREFIX), as an installed pvc has
(scripts/install.sh compiles pvc's own modules: with PYTHONDONTWRITEBYTECODE set, as on this project's
machines, an editable install would otherwise compile them again at every start).

Run: python -m bench.bench_cli [--rounds 20] [--baseline OTHER/src]   (--baseline: measure another
checkout's pvc too, e.g. the previous commit's from `git archive HEAD src | tar -x -C /tmp/base`)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.common import define_bulk, with_zk

HEAVY = ("rich", "textual", "aiohttp", "prometheus_client", "libvirt", "rados", "rbd", "yaml", "structlog")
VM = "bench-vm"


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall ms, CPU ms) of one run of ``cmd``; it must succeed within a minute. A blocking wait4, not
    subprocess.run(timeout=...), whose polling (up to 50 ms between looks) would round wall times up."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    watchdog = threading.Timer(60, proc.kill)
    watchdog.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        watchdog.cancel()
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    return wall * 1000, (usage.ru_utime + usage.ru_stime) * 1000


def imported(args: list[str], env: dict[str, str]) -> list[str]:
    """The modules ``pvc ARGS`` has imported when it exits (interpreter start-up's included)."""
    code = ("import os, sys; end = os._exit; "  # pvc's entry point ends with os._exit (no atexit)
            "os._exit = lambda code: (print('modules:', *sys.modules, file=sys.stderr), sys.stderr.flush(), end(code)); "
            "from pvc.cli.start import main; main()")
    proc = subprocess.run([sys.executable, "-c", code, *args], env=env, check=True, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, timeout=60)
    return proc.stderr.rpartition("modules:")[2].split()


def row(label: str, runs: list[tuple[float, float]]) -> str:
    walls, cpus = sorted(w for w, _ in runs), sorted(c for _, c in runs)
    return (f"{label:50s} wall p50 {statistics.median(walls):6.1f} ms  min {walls[0]:6.1f}  max {walls[-1]:6.1f}   "
            f"CPU p50 {statistics.median(cpus):6.1f} ms  min {cpus[0]:6.1f}")


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"


async def seed(zookeeper: str) -> None:
    from pvc.schema import NodeInfo, Paths

    async def node(zk) -> None:
        await zk.ensure_path(Paths.node("bench-node"))
        await zk.set(Paths.node("bench-node"), NodeInfo(name="bench-node").encode())

    await with_zk(zookeeper, node)
    await define_bulk(zookeeper, [VM], ["bench-node"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--baseline", default="", help="also measure the pvc in this directory (another checkout's "
                        "src, e.g. from `git archive`), interleaved with this one's, so both see the same load")
    args = parser.parse_args()
    rounds = max(1, min(args.rounds, 500))  # bounded

    from pvc.devcluster.zookeeper_server import ZookeeperServer, ensemble_peers

    script = Path(sys.executable).with_name("pvc")  # the entry point (PYTHONPATH, if given, comes first)
    pvc = [sys.executable, str(script)] if script.exists() else [sys.executable, "-m", "pvc.cli.app"]
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        server = ZookeeperServer(Path(tmp) / "zk")
        # As a cluster has it: a 3-server ensemble (a session is a quorum write) and a credential.
        peers = ensemble_peers(3)
        members = [ZookeeperServer(Path(tmp) / f"zk{i}", port, myid=i, peers=peers) for i, port, _, _ in peers]
        protected = "bench:" + os.urandom(8).hex() + "@" + ",".join(m.address for m in members)
        server.start()
        try:
            for member in members:
                member.start(wait=False)
            for member in members:
                member.wait_ready(60)
            env = {**os.environ, "PVC_ZOOKEEPER": server.address, "PYTHONPYCACHEPREFIX": str(Path(tmp) / "pyc")}
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            variants = {"": env}
            if args.baseline:
                path = os.path.abspath(args.baseline)
                variants[" baseline"] = {**env, "PYTHONPATH": path, "PYTHONPYCACHEPREFIX": str(Path(tmp) / "pyc-base")}
            variants[" (ensemble, credential)"] = {**env, "PVC_ZOOKEEPER": protected}
            for address in (server.address, protected):
                subprocess.run([*pvc, "init"], env={**env, "PVC_ZOOKEEPER": address}, check=True,
                               capture_output=True, timeout=60)
                asyncio.run(seed(address))
            commands = {"pvc --help": ["--help"], f"pvc vm info {VM}": ["vm", "info", VM]}
            runs: dict[tuple[str, str], list] = {("python -c pass (floor)", ""): []}
            runs.update({(label, variant): [] for label in commands for variant in variants
                         if "ensemble" not in variant or "info" in label})
            for label, variant in runs:  # fills the bytecode caches
                if label in commands:
                    timed([*pvc, *commands[label]], variants[variant])
            print(f"CLI cold start, {rounds} rounds each; before: {load()}")
            for _ in range(rounds):  # interleaved, so a change of load hits every row alike
                for (label, variant), found in runs.items():
                    cmd = [*pvc, *commands[label]] if label in commands else [sys.executable, "-c", "pass"]
                    found.append(timed(cmd, variants.get(variant, env)))
            for (label, variant), found in runs.items():
                print(row(label + variant, found))
            for label, cli_args in commands.items():
                for variant in [v for v in variants if "ensemble" not in v]:
                    modules = imported(cli_args, variants[variant])
                    heavy = sorted({m.split(".")[0] for m in modules} & set(HEAVY))
                    print(f"{label}{variant}: imports {len(modules)} modules; heavy ones: {', '.join(heavy) or 'none'}")
            print(f"after: {load()}")
        finally:
            for member in [server, *members]:
                member.stop()


if __name__ == "__main__":
    main()
