"""The REST API on a local 3-node cluster (test driver). Prints only.

- `GET /api/v1/vm` with 10,000 VMs (wall time, one request) against `pvc vm list -o json` (direct
  ZooKeeper) and `pvc -c dev vm list -o json` (the CLI through the API);
- requests per second for `GET /api/v1/vm/{vm}` from one client (sequential, keep-alive);
- `pvc vm start` through the API, returning -> domain running in libvirt (p50, p99), and the raw
  `POST /api/v1/vm/{vm}/start` the same way;
- pvcd's added CPU and memory with the API on: one coordinator idle with the API on, then restarted
  with it off; and its CPU per 1,000 API requests under the load above.

Run: python -m bench.bench_api [--vms 10000] [--rounds 50] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import tempfile
import time

import libvirt
import yaml

from bench.bench_vm_ops import cpu_seconds, rss_mib
from bench.common import LifecycleEvents, cluster, define_bulk, summary


async def http_timings(url: str, token: str, names: list[str], seconds: float, list_runs: int, pid: int):
    """The lists, then single-VM reads for ``seconds``; the daemon's CPU seconds for each part."""
    import aiohttp

    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        lists, count = [], 0
        cpu = [cpu_seconds(pid)]
        for _ in range(list_runs):
            start = time.perf_counter()
            async with session.get(f"{url}/api/v1/vm") as response:
                body = await response.read()
            if response.status == 200:
                lists.append(time.perf_counter() - start)
                count = len(json.loads(body))
            else:
                print(f"GET /api/v1/vm answered {response.status}: {body[:200].decode()}")
        cpu.append(cpu_seconds(pid))
        done, latencies, failed = 0, [], 0
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline and done < 100_000:  # bounded both ways
            name = names[done % len(names)]
            start = time.perf_counter()
            async with session.get(f"{url}/api/v1/vm/{name}") as response:
                await response.read()
            done += 1
            if response.status == 200:
                latencies.append((time.perf_counter() - start) * 1000)
            else:
                failed += 1
        cpu.append(cpu_seconds(pid))
        return lists, count, done / seconds, latencies, failed, (cpu[1] - cpu[0], cpu[2] - cpu[1])


async def raw_start(url: str, token: str, name: str) -> bool:
    import aiohttp

    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as session:
        async with session.post(f"{url}/api/v1/vm/{name}/start", json={}) as response:
            return response.status == 200


def attempts(cmd: list[str], env: dict, count: int) -> str:
    """Median wall time of the runs that succeeded, and what the others said."""
    times, failures = [], []
    for _ in range(count):
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if proc.returncode == 0:
            times.append(time.perf_counter() - start)
        else:
            failures.append(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}")
    shown = f"median {statistics.median(times):.2f} s, max {max(times):.2f} s" if times else "no run succeeded"
    return shown + (f" ({len(failures)} of {count} failed: {failures[0]})" if failures else "")


def settle(pids: list[int], limit: float = 180) -> None:
    """Until the daemons have loaded the new records (their CPU falls under 20 % of a core), bounded."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = [cpu_seconds(p) for p in pids]
        time.sleep(2)
        if all((cpu_seconds(p) - b) / 2 < 0.2 for p, b in zip(pids, before)):
            return
    print(f"the daemons were still busy after {limit:g} s; measuring anyway")


def idle(pid: int, seconds: float) -> tuple[float, float]:
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / seconds * 100, rss_mib(pid)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vms", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pvc-bench-api-") as workdir:
        dev = cluster(workdir)
        try:
            info = {n["name"]: n for n in dev.info()}
            url, token = info["hv1"]["api_url"], info["hv1"]["api_token"]
            env = {**os.environ, "PVC_ZOOKEEPER": dev.state.zookeeper, "XDG_CONFIG_HOME": f"{workdir}/xdg"}
            env.pop("PVC_CONNECTION", None)
            subprocess.run(["pvc", "connection", "add", "dev", "--url", url, "--token", token], env=env, check=True,
                           stdout=subprocess.DEVNULL)
            nodes = [n.name for n in dev.state.nodes]

            # Added footprint, idle: hv2 with the API on, then restarted with it off.
            time.sleep(3)
            hv2 = dev.node("hv2")
            on_cpu, on_rss = idle(hv2.pvcd_pid, 15)
            config = yaml.safe_load(open(hv2.config))
            config["api"]["listen"] = ""
            open(hv2.config, "w").write(yaml.safe_dump(config))
            dev.stop_node("hv2")
            dev.start_node("hv2")
            time.sleep(3)
            off_cpu, off_rss = idle(dev.node("hv2").pvcd_pid, 15)
            print(f"pvcd idle, API on: {on_cpu:.2f}% of a core, RSS {on_rss:.0f} MiB; "
                  f"API off: {off_cpu:.2f}%, RSS {off_rss:.0f} MiB")

            names = [f"a{i:05d}" for i in range(args.vms)]
            t = time.perf_counter()
            asyncio.run(define_bulk(dev.state.zookeeper, names, nodes))
            print(f"defined {args.vms:,} VMs in {time.perf_counter() - t:.1f} s")
            settle([n.pvcd_pid for n in dev.state.nodes])

            lists, count, rate, latencies, failed, (cpu_lists, cpu_reads) = asyncio.run(
                http_timings(url, token, names[:1000], args.seconds, 5, dev.node("hv1").pvcd_pid))
            direct = attempts(["pvc", "--timeout", "30", "vm", "list", "-o", "json"], env, 5)
            remote = attempts(["pvc", "--timeout", "60", "-c", "dev", "vm", "list", "-o", "json"], env, 5)
            if lists:
                print(f"GET /api/v1/vm ({count:,} VMs): median {statistics.median(lists):.2f} s, max {max(lists):.2f} s "
                      f"({len(lists)} of 5 answered 200)")
            print(f"`pvc vm list -o json` (direct) at {args.vms:,} VMs: {direct}; through the API (`pvc -c dev`): "
                  f"{remote}")
            print(f"GET /api/v1/vm/{{vm}}, one client, sequential: {rate:.0f} requests/s ({failed} not 200); "
                  + (summary("latency", latencies) if latencies else "none answered 200"))
            print(f"hv1's pvcd CPU: {cpu_lists / max(len(lists), 1):.2f} s per GET /api/v1/vm of {count:,} VMs; "
                  f"{cpu_reads / max(len(latencies), 1) * 1000:.2f} ms per GET /api/v1/vm/{{vm}} (both with its "
                  "own daemon work meanwhile)")

            events = LifecycleEvents({n.name: n.libvirt_uri for n in dev.state.nodes})
            cli, http, wall, failures = [], [], [], 0
            for i, name in enumerate(names[: 2 * args.rounds]):
                start = time.perf_counter()
                if i % 2 == 0:
                    proc = subprocess.run(["pvc", "-c", "dev", "vm", "start", name], env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                    ok = proc.returncode == 0
                else:
                    ok = asyncio.run(raw_start(url, token, name))
                returned = time.perf_counter()
                if not ok:
                    failures += 1
                    continue
                if i % 2 == 0:
                    wall.append((returned - start) * 1000)
                running = events.wait(name, libvirt.VIR_DOMAIN_EVENT_STARTED, timeout=30)
                if running is None:
                    print(f"{name} did not start within 30 s")
                    continue
                (cli if i % 2 == 0 else http).append((running - returned) * 1000)
            events.close()
            if failures:
                print(f"{failures} of {2 * args.rounds} start requests failed (503: the daemon's ZooKeeper "
                      "requests ran out of time)")
            if cli:
                print(summary("`pvc -c dev vm start` returning -> domain running", cli))
            if wall:
                print(summary("`pvc -c dev vm start` command wall time", wall))
            if http:
                print(summary("POST /api/v1/vm/{vm}/start answered -> domain running", http))
        finally:
            dev.down()


if __name__ == "__main__":
    main()
