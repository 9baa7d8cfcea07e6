"""A real QEMU guest on an RBD disk: live migration, fence-to-writing, in-guest write throughput.

Starts one 2-node qemu-mode dev cluster with a real Ceph cluster and simulated BMCs
(`up --hypervisor qemu --storage ceph --fencing`; fencing only where ipmi_sim and ipmitool exist),
and always tears it down. Prints figures, asserts nothing:

1. Live migration (`pvc vm move --wait`, wall, and the record's last_migration.seconds) of the tiny
   guest (pvc.devcluster.guest, 128 MiB, TCG) with a 1 GiB RBD disk it writes to every second,
   against the same guest diskless; both run side by side and are moved alternately, each leg to
   the other node (directions alternate), the order of the two guests alternating between rounds.
2. Fence to recovered-and-writing: kill -9 the pvcd of the (non-primary) node running the RBD guest;
   from the kill until the record says the guest runs on the other node, until the new boot's kernel
   banner, and until its console shows the first disk write of the new boot (guest.DISK_LINE ... ok).
3. Sequential write and read throughput inside a guest on an RBD volume against `rbd bench` on the
   same cluster and pool. The stock guest only writes one 512-byte block a second, so this guest
   boots the stock kernel with the stock initrd plus an appended initramfs whose /init replaces the
   stock one (the kernel unpacks concatenated archives in order; later files win): it loads the
   virtio modules, then `dd bs=4M oflag=direct` of ZONE MiB to /dev/vda (conv=fsync) and back with
   iflag=direct, timed by the guest's /proc/uptime. Nothing in scripts/ or the shared guest cache
   changes. Under TCG (no KVM here) the guest's own CPU is emulated, which the ratio includes.

    python bench/bench_rbd_guest.py [--rounds 4] [--mib 256] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_live_migration import RecordClock  # noqa: E402
from pvc.devcluster import guest  # noqa: E402
from pvc.devcluster.cluster import DevCluster  # noqa: E402

POOL = "vms"
BOOT = "Linux version "  # the kernel's banner, first on the console at every boot
FENCING = bool(shutil.which("ipmi_sim") and shutil.which("ipmitool"))
_DISK = re.compile(re.escape(guest.DISK_LINE) + r"(\d+) md5 \w+ (.*)")


class Skip(Exception):
    pass


def run_cmd(*cmd: str, env: dict | None = None, timeout: float = 180) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise Skip(f"{' '.join(cmd)} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()[:500]}")
    return elapsed, proc.stdout


def wait_for(what: str, check, timeout: float, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(interval)
    raise Skip(f"timed out after {timeout:.0f} s waiting for {what}")


def overlay_initrd(stock: Path, out: Path, mib: int) -> Path:
    """The stock initrd with an appended archive whose /init measures dd throughput on /dev/vda."""
    count = mib // 4
    init = f"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk; do
  insmod /lib/modules/$m.ko
done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do sleep 0.2; i=$((i + 1)); done
echo "pvc-bench: up"
up() {{ cut -d' ' -f1 /proc/uptime; }}
t0=$(up); dd if=/dev/zero of=/dev/vda bs=4M count={count} oflag=direct conv=fsync 2>/dev/null; rc=$?; t1=$(up)
echo "pvc-bench write {count * 4 * 1048576} bytes rc $rc from $t0 to $t1"
t0=$(up); dd if=/dev/vda of=/dev/null bs=4M count={count} iflag=direct 2>/dev/null; rc=$?; t1=$(up)
echo "pvc-bench read {count * 4 * 1048576} bytes rc $rc from $t0 to $t1"
echo "pvc-bench: done"
while true; do sleep 3600; done
"""
    root = out.parent / "overlay-root"
    root.mkdir(parents=True, exist_ok=True)
    (root / "init").write_text(init)
    (root / "init").chmod(0o755)
    archive = subprocess.run("find . | cpio -o -H newc --quiet | gzip -9", shell=True, cwd=root,
                             capture_output=True, check=True).stdout
    out.write_bytes(stock.read_bytes() + archive)
    return out


def run(rounds: int, mib: int, workdir: Path) -> None:
    if reason := guest.qemu_missing():
        sys.exit(f"QEMU cannot run here: {reason}")
    stock = guest.ensure_guest()
    begin = time.monotonic()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} cores, "
          f"fencing {'on' if FENCING else 'off (no ipmi_sim/ipmitool)'}", flush=True)
    dev = DevCluster(workdir)
    results: list[str] = []
    try:
        t = time.perf_counter()
        dev.up(nodes=2, hypervisor="qemu", storage="ceph", fencing=FENCING, timeout=180)
        print(f"cluster up (2 qemu nodes, ceph, fencing={FENCING}) in {time.perf_counter() - t:.1f} s", flush=True)
        info = dev.info()[0]
        env = {**os.environ, "PVC_ZOOKEEPER": dev.state.zookeeper,
               "PVC_CEPH_CONF": info["ceph_conf"], "PVC_CEPH_KEYRING": info["ceph_keyring"]}
        ceph = dev.ceph()
        rbd = ["rbd", "--conf", str(ceph.conf), "--keyring", str(ceph.keyring)]
        pvc = shutil.which("pvc") or "pvc"

        def p(*args: str, timeout: float = 180) -> str:
            return run_cmd(pvc, *args, env=env, timeout=timeout)[1]

        def vm(name: str) -> dict:
            return json.loads(p("vm", "info", name, "-o", "json"))

        console_dir = Path(dev.node("hv1").console_log_directory)

        def console(name: str) -> str:
            try:
                return (console_dir / f"{name}.log").read_text(errors="replace")
            except FileNotFoundError:
                return ""

        def disk_lines(name: str) -> list[tuple[int, str]]:
            return [(int(n), v) for n, v in _DISK.findall(console(name).rpartition(BOOT)[2])]

        p("storage", "pool", "add", POOL, "--pgs", "8", "--replicas", "1")
        wait_for("nodes' storage ok", lambda: all(n["storage"] == "ok" for n in json.loads(p("node", "list", "-o", "json"))),
                 60, 0.5)
        p("storage", "volume", "add", POOL, "disk", "1G")
        for name, volume in (("rbdvm", f"{POOL}/disk"), ("plainvm", "")):
            path = workdir / f"{name}.xml"
            path.write_text(guest.domain_xml(name, console_dir, volume=volume))
            p("vm", "define", str(path), "--target", "hv1")
            p("vm", "start", name, "--wait")
        wait_for("both guests ticking and rbdvm writing", lambda: guest.TICK in console("plainvm")
                 and any(v == "ok" for _, v in disk_lines("rbdvm")), 120, 0.3)
        print(f"guests up, setup done at {time.monotonic() - begin:.0f} s", flush=True)

        # -- 1. live migration, with and without the RBD disk ----------------------------------------
        where = {"rbdvm": "hv1", "plainvm": "hv1"}
        wall: dict[str, list[float]] = {"rbdvm": [], "plainvm": []}
        recorded: dict[str, list[float]] = {"rbdvm": [], "plainvm": []}
        try:
            for r in range(rounds):
                for name in (("rbdvm", "plainvm") if r % 2 == 0 else ("plainvm", "rbdvm")):
                    target = "hv2" if where[name] == "hv1" else "hv1"
                    elapsed, _ = run_cmd(pvc, "vm", "move", name, "--target", target, "--wait", env=env, timeout=120)
                    where[name] = target
                    wall[name].append(elapsed)
                    m = vm(name).get("last_migration") or {}
                    if m.get("target") == target and m.get("seconds") is not None:
                        recorded[name].append(m["seconds"])
                    time.sleep(0.5)
                print(f"round {r + 1}: rbd {wall['rbdvm'][-1]:.2f} s, diskless {wall['plainvm'][-1]:.2f} s "
                      f"(wall; -> {where['rbdvm']})", flush=True)
            lines = disk_lines("rbdvm")
            bad = [x for x in lines if x[1] != "ok"]
            boots = console("rbdvm").count(BOOT)
            results.append(f"live migration, 128 MiB TCG guest, {rounds} moves each (directions alternate):")
            for name, label in (("rbdvm", "with 1 GiB RBD disk"), ("plainvm", "diskless")):
                w, rec = wall[name], recorded[name]
                results.append(f"  {label:<20} pvc vm move --wait: median {statistics.median(w):.3f} s "
                               f"(min {min(w):.3f}, max {max(w):.3f})"
                               + (f"; last_migration.seconds median {statistics.median(rec):.3f} s"
                                  f" (min {min(rec):.3f}, max {max(rec):.3f}, n={len(rec)})" if rec else ""))
            results.append(f"  ratio of medians rbd / diskless: wall {statistics.median(wall['rbdvm']) / statistics.median(wall['plainvm']):.3f}"
                           + (f", recorded {statistics.median(recorded['rbdvm']) / statistics.median(recorded['plainvm']):.3f}"
                              if recorded["rbdvm"] and recorded["plainvm"] else ""))
            results.append(f"  rbd guest through the moves: {len(lines)} disk writes, {len(bad)} not ok, "
                           f"{boots} boot(s) on its console")
        except Skip as e:
            results.append(f"live migration: stopped: {e}")
        print("\n".join(results), flush=True)

        # -- 3. in-guest sequential throughput vs rbd bench --------------------------------------------
        try:
            p("vm", "stop", "plainvm", "--wait")
            primary = next(n["name"] for n in json.loads(p("node", "list", "-o", "json"))
                           if n["coordinator_state"] == "primary")
            p("storage", "volume", "add", POOL, "tput", f"{mib + 64}M")
            p("storage", "volume", "add", POOL, "rbdbench", f"{mib + 64}M")
            initrd = overlay_initrd(stock.initrd, workdir / "tput-initrd.gz", mib)
            path = workdir / "tput.xml"
            path.write_text(guest.domain_xml("tput", console_dir, volume=f"{POOL}/tput",
                                             guest=guest.Guest(stock.kernel, initrd)))
            p("vm", "define", str(path), "--target", primary)
            p("vm", "start", "tput", "--wait")
            wait_for("the throughput guest to finish", lambda: "pvc-bench: done" in console("tput"), 150, 0.5)
            got = {k: (int(b), int(rc), float(t1) - float(t0)) for k, b, rc, t0, t1 in re.findall(
                r"pvc-bench (write|read) (\d+) bytes rc (\d+) from ([\d.]+) to ([\d.]+)", console("tput"))}
            p("vm", "stop", "tput", "--wait")
            bench_out: dict[str, float] = {}
            for io in ("write", "read"):
                for threads in ("1", "16"):
                    _, out = run_cmd(*rbd, "bench", "--io-type", io, "--io-size", "4M", "--io-pattern", "seq",
                                     "--io-threads", threads, "--io-total", f"{mib}M", f"{POOL}/rbdbench", env=env, timeout=120)
                    # "elapsed: 1   ops: 64   ops/sec: 80.5   bytes/sec: 322 MiB/s": ops/sec (computed from
                    # the exact elapsed time) times the 4 MiB I/O size is the figure.
                    m = re.search(r"elapsed:\s*\S+\s+ops:\s*(\d+)\s+ops/sec:\s*([\d.]+)\s+bytes/sec:\s*(.*)", out)
                    if not m:
                        raise Skip(f"could not read rbd bench output: {out[-300:]}")
                    bench_out[f"{io}/{threads}"] = float(m.group(2)) * 4
                    print(f"  rbd bench {io} {threads} thread(s): {m.group(0).strip()}", flush=True)
            results.append(f"sequential throughput, {mib} MiB in 4 MiB I/Os (guest: dd oflag/iflag=direct; "
                           f"rbd bench --io-pattern seq on a volume in the same pool):")
            for io in ("write", "read"):
                if io not in got or got[io][1] != 0 or got[io][2] <= 0:
                    results.append(f"  {io}: guest figure missing or dd failed: {got.get(io)}")
                    continue
                in_guest = got[io][0] / 1048576 / got[io][2]
                b1, b16 = bench_out[f"{io}/1"], bench_out[f"{io}/16"]
                results.append(f"  {io:<5}: guest {in_guest:7.1f} MiB/s ({got[io][2]:.2f} s); rbd bench 1 thread "
                               f"{b1:7.1f} MiB/s, 16 threads {b16:7.1f} MiB/s; ratio rbd bench / guest "
                               f"{b1 / in_guest:.2f} (1 thread), {b16 / in_guest:.2f} (16)")
        except Skip as e:
            results.append(f"throughput: skipped: {e}")
        print("\n".join(results[-3:]), flush=True)

        # -- 2. fence to recovered and writing ---------------------------------------------------------
        if not FENCING:
            results.append("fence: skipped (no ipmi_sim/ipmitool, so no fencing)")
        elif time.monotonic() - begin > 330:
            results.append(f"fence: skipped (time budget: {time.monotonic() - begin:.0f} s used)")
        else:
            try:
                victim = next(n["name"] for n in json.loads(p("node", "list", "-o", "json"))
                              if n["coordinator_state"] != "primary")
                if vm("rbdvm")["node"] != victim:
                    p("vm", "move", "rbdvm", "--target", victim, "--wait")
                wait_for("rbdvm writing", lambda: len(disk_lines("rbdvm")) > 0, 30, 0.2)
                boots = console("rbdvm").count(BOOT)
                last_block = disk_lines("rbdvm")[-1][0]
                clock = RecordClock(dev.state.zookeeper, "rbdvm")
                t0 = time.perf_counter()
                dev.stop_node(victim, signal.SIGKILL)
                marks: dict[str, float] = {}

                def progressed() -> bool:
                    text = console("rbdvm")
                    if "banner" not in marks and text.count(BOOT) > boots:
                        marks["banner"] = time.perf_counter()
                    if "banner" in marks and "write" not in marks:
                        if any(v == "ok" for _, v in _DISK.findall(text.rpartition(BOOT)[2])):
                            marks["write"] = time.perf_counter()
                    return "write" in marks

                wait_for("the guest writing on its new node", progressed, 120, 0.05)
                time.sleep(0.3)
                running = next((t for t, d in clock.changes if t >= t0 and d.node != victim
                                and d.libvirt_state == "running"), None)
                fenced = json.loads(p("node", "info", victim, "-o", "json")).get("fence") or {}
                latest = console("rbdvm").rpartition(BOOT)[2]
                verified = re.search(re.escape(guest.DISK_LINE) + r"verified blocks (\d+)-(\d+) of an earlier boot: (.*)",
                                     latest)
                first_new = disk_lines("rbdvm")[0] if disk_lines("rbdvm") else None
                results.append(f"fence (kill -9 pvcd of {victim}, dead_after 3 s, simulated BMC):")
                results.append("  kill -> record running elsewhere: "
                               + (f"{running - t0:.2f} s" if running else "not seen by the watch"))
                results.append(f"  kill -> new boot's kernel banner on the console: {marks['banner'] - t0:.2f} s")
                results.append(f"  kill -> first disk write of the new boot (recovered and writing): {marks['write'] - t0:.2f} s")
                results.append(f"  old boot's last block seen {last_block}; new boot: "
                               f"{verified.group(0).strip() if verified else 'no verify line'}; first new write "
                               f"{first_new}; blocklisted {fenced.get('blocklisted')}")
            except Skip as e:
                results.append(f"fence: stopped: {e}")
    finally:
        t = time.perf_counter()
        dev.down()
        print(f"cluster down in {time.perf_counter() - t:.1f} s; total {time.monotonic() - begin:.0f} s; "
              f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    print("\n== results ==")
    print("\n".join(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--mib", type=int, default=256, help="MiB written and read in the throughput test")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary directory")
    args = parser.parse_args()
    if args.workdir:
        run(args.rounds, args.mib, args.workdir.absolute())
    else:
        with tempfile.TemporaryDirectory(prefix="pvc-bench-rbd-") as tmp:
            run(args.rounds, args.mib, Path(tmp))


if __name__ == "__main__":
    main()
