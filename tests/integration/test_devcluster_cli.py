"""`python -m pvc.devcluster up|info|down` as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

from pvc.devcluster.proc import is_running


def devcluster(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pvc.devcluster", *args], capture_output=True, text=True, timeout=120)


def test_up_info_down(tmp_path):
    workdir = str(tmp_path / "dc")
    up = devcluster("up", "--nodes", "2", "--workdir", workdir)
    assert up.returncode == 0, up.stderr
    last = up.stdout.strip().splitlines()[-1]
    assert last.startswith("PVC_ZOOKEEPER=127.0.0.1:")
    zookeeper = last.split("=", 1)[1]
    try:
        info = devcluster("info", "--workdir", workdir, "-o", "json")
        nodes = json.loads(info.stdout)
        assert [n["name"] for n in nodes] == ["hv1", "hv2"]
        for n in nodes:
            assert n["config"].endswith("pvcd.yaml") and n["libvirt_uri"].startswith("test+unix://")
            assert n["console_log_directory"] and n["zookeeper"] == zookeeper
            assert is_running(n["pvcd_pid"]) and is_running(n["libvirtd_pid"])
        listed = subprocess.run(["pvc", "--zookeeper", zookeeper, "node", "list", "-o", "json"],
                                capture_output=True, text=True)
        assert [n["daemon_state"] for n in json.loads(listed.stdout)] == ["run", "run"]
        again = devcluster("up", "--nodes", "2", "--workdir", workdir)
        assert again.returncode != 0 and "already running" in again.stderr
    finally:
        down = devcluster("down", "--workdir", workdir)
    assert down.returncode == 0
    state = json.loads((tmp_path / "dc" / "cluster.json").read_text())
    pids = [state["zookeeper_pid"]] + [p for n in nodes for p in (n["pvcd_pid"], n["libvirtd_pid"])]
    assert not any(is_running(p) for p in pids)
    zk_pid = int((tmp_path / "dc" / "zookeeper" / "zookeeper.pid").read_text().split()[0]) \
        if (tmp_path / "dc" / "zookeeper" / "zookeeper.pid").exists() else None
    assert not is_running(zk_pid)
