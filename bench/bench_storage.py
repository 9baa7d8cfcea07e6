"""Storage operation latency on a real Ceph cluster (one mon, mgr and OSD on loopback, bluestore on a
sparse file; started here with pvc.devcluster.ceph).

Prints the median and p90 of: `pvc storage volume add` (10G), `volume clone` (of a 10G volume with 64 MiB
written), `snapshot add`, and the Ceph tool each wraps (`rbd create`, `rbd deep cp`, `rbd snap create`)
so the CLI's own overhead (Python start-up, argument checks, the existence checks) shows, and the CLI's
cold start alone.
Run: python -m bench.bench_storage [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time

from pvc.devcluster.ceph import CephCluster

POOL = "bench"


def timed(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    return time.perf_counter() - start


def summary(name: str, values: list[float]) -> str:
    values = sorted(values)
    p90 = values[min(len(values) - 1, int(len(values) * 0.9))]
    return f"{name:<44} median {statistics.median(values) * 1000:7.0f} ms   p90 {p90 * 1000:7.0f} ms   (n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pvc-bench-ceph-") as workdir:
        ceph = CephCluster(os.path.join(workdir, "ceph"))
        start = time.perf_counter()
        ceph.start()
        print(f"ceph cluster HEALTH_OK after {time.perf_counter() - start:.1f} s")
        try:
            env = {**os.environ, "PVC_CEPH_CONF": str(ceph.conf), "PVC_CEPH_KEYRING": str(ceph.keyring)}
            rbd = ["rbd", "--conf", str(ceph.conf), "--keyring", str(ceph.keyring), "--name", "client.admin"]
            pvc = ["pvc", "storage"]
            subprocess.run([*pvc, "pool", "add", POOL, "--pgs", "8", "--replicas", "1"], env=env, check=True,
                           stdout=subprocess.DEVNULL, timeout=300)
            # The clone source: 10 GiB with 64 MiB of data in it.
            subprocess.run([*pvc, "volume", "add", POOL, "src", "10G"], env=env, check=True, stdout=subprocess.DEVNULL)
            subprocess.run([*rbd, "bench", "--io-type", "write", "--io-size", "4M", "--io-total", "64M",
                            f"{POOL}/src"], env=env, check=True, stdout=subprocess.DEVNULL, timeout=300)
            results: dict[str, list[float]] = {}
            for i in range(args.rounds):
                results.setdefault("pvc storage volume add (10G)", []).append(
                    timed([*pvc, "volume", "add", POOL, f"v{i}", "10G"], env))
                results.setdefault("  rbd create (10G)", []).append(
                    timed([*rbd, "create", f"{POOL}/r{i}", "--size", "10G"], env))
                results.setdefault("pvc storage volume clone (10G, 64M used)", []).append(
                    timed([*pvc, "volume", "clone", POOL, "src", f"c{i}"], env))
                results.setdefault("  rbd deep cp (same)", []).append(
                    timed([*rbd, "deep", "cp", "--no-progress", f"{POOL}/src", f"{POOL}/d{i}"], env))
                results.setdefault("pvc storage snapshot add", []).append(
                    timed([*pvc, "snapshot", "add", POOL, f"v{i}", "s1"], env))
                results.setdefault("  rbd snap create", []).append(
                    timed([*rbd, "snap", "create", "--no-progress", f"{POOL}/r{i}@s1"], env))
                results.setdefault("pvc storage --help (CLI cold start, no Ceph call)", []).append(
                    timed([*pvc, "--help"], env))
            for name, values in results.items():
                print(summary(name, values))
            print(f"load average at the end: {os.getloadavg()[0]:.1f}")
        finally:
            ceph.stop()


if __name__ == "__main__":
    main()
