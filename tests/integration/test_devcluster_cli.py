"""`python -m pvc.devcluster up|info|down` and the fault verbs as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from pvc.devcluster.proc import is_running


def devcluster(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pvc.devcluster", *args], capture_output=True, text=True, timeout=120)


def test_up_info_down(tmp_path):
    workdir = str(tmp_path / "dc")
    up = devcluster("up", "--nodes", "2", "--workdir", workdir)
    assert up.returncode == 0, up.stderr
    last = up.stdout.strip().splitlines()[-1]
    assert last.startswith("PVC_ZOOKEEPER=pvc:")  # with the credential `up` made (ZooKeeper ACLs)
    zookeeper = last.split("=", 1)[1]
    credential, hosts = zookeeper.rsplit("@", 1)
    try:
        info = devcluster("info", "--workdir", workdir, "-o", "json")
        nodes = json.loads(info.stdout)
        assert [n["name"] for n in nodes] == ["hv1", "hv2"]
        # Two coordinators: one ZooKeeper server, on the first.
        assert nodes[1]["zookeeper_server"] is None
        server = nodes[0]["zookeeper_server"]
        assert server["index"] == 1 and hosts == f"127.0.0.1:{server['client_port']}" and is_running(server["pid"])
        for n in nodes:
            assert n["config"].endswith("pvcd.yaml") and n["libvirt_uri"].startswith("test+unix://")
            assert n["console_log_directory"] and n["zookeeper"] == zookeeper
            with open(n["config"]) as config:  # pvcd has the credential too
                assert yaml.safe_load(config)["zookeeper"] == {"auth": credential, "hosts": hosts, "session_timeout": 3,
                                                               "request_timeout": 5}
            assert is_running(n["pvcd_pid"]) and is_running(n["libvirtd_pid"])
        listed = subprocess.run(["pvc", "--zookeeper", zookeeper, "node", "list", "-o", "json"],
                                capture_output=True, text=True)
        assert [n["daemon_state"] for n in json.loads(listed.stdout)] == ["run", "run"]
        anonymous = subprocess.run(["pvc", "--zookeeper", hosts, "node", "list"], capture_output=True, text=True)
        assert anonymous.returncode == 4 and "refused access (NoAuth)" in anonymous.stderr
        again = devcluster("up", "--nodes", "2", "--workdir", workdir)
        assert again.returncode != 0 and "already running" in again.stderr
    finally:
        down = devcluster("down", "--workdir", workdir)
    assert down.returncode == 0
    pids = [server["pid"]] + [p for n in nodes for p in (n["pvcd_pid"], n["libvirtd_pid"])]
    assert not any(is_running(p) for p in pids)


def one_line_error(proc: subprocess.CompletedProcess, contains: str) -> None:
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and contains in lines[0], proc.stderr


@pytest.fixture(scope="module")
def cli_cluster(tmp_path_factory):
    """Three nodes, three coordinators: a 3-server ensemble by default."""
    workdir = str(tmp_path_factory.mktemp("verbs") / "dc")
    up = devcluster("up", "--nodes", "3", "--workdir", workdir)
    assert up.returncode == 0, up.stderr
    try:
        yield workdir
    finally:
        devcluster("down", "--workdir", workdir)


def info(workdir: str) -> dict:
    proc = devcluster("info", "--workdir", workdir, "-o", "json")
    assert proc.returncode == 0, proc.stderr
    return {n["name"]: n for n in json.loads(proc.stdout)}


def verb(workdir: str, *args: str) -> subprocess.CompletedProcess:
    proc = devcluster(*args, "--workdir", workdir)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_three_coordinators_run_an_ensemble(cli_cluster):
    nodes = info(cli_cluster)
    servers = [n["zookeeper_server"] for n in nodes.values()]
    assert [s["index"] for s in servers] == [1, 2, 3] and all(is_running(s["pid"]) for s in servers)
    hosts = ",".join(f"127.0.0.1:{s['client_port']}" for s in servers)
    assert all(n["zookeeper"].rsplit("@", 1)[1] == hosts for n in nodes.values())  # after the credential
    for n in nodes.values():  # every daemon is given every server
        assert hosts in open(n["config"]).read()


def test_pvcd_verbs(cli_cluster):
    old = info(cli_cluster)["hv2"]["pvcd_pid"]
    verb(cli_cluster, "kill", "hv2")
    assert info(cli_cluster)["hv2"]["pvcd_pid"] is None and not is_running(old)
    verb(cli_cluster, "start", "hv2")
    new = info(cli_cluster)["hv2"]["pvcd_pid"]
    assert is_running(new) and new != old
    verb(cli_cluster, "freeze", "hv2")
    assert info(cli_cluster)["hv2"]["pvcd_frozen"] is True
    verb(cli_cluster, "thaw", "hv2")
    assert info(cli_cluster)["hv2"]["pvcd_frozen"] is False
    verb(cli_cluster, "stop", "hv2")  # fails unless SIGTERM alone stopped it
    assert info(cli_cluster)["hv2"]["pvcd_pid"] is None and not is_running(new)
    one_line_error(devcluster("freeze", "hv2", "--workdir", cli_cluster), "not running")
    verb(cli_cluster, "start", "hv2")
    one_line_error(devcluster("start", "hv2", "--workdir", cli_cluster), "already running")
    # A frozen daemon is stopped cleanly too.
    verb(cli_cluster, "freeze", "hv2")
    verb(cli_cluster, "stop", "hv2")
    verb(cli_cluster, "start", "hv2")


def test_zookeeper_verbs(cli_cluster):
    old = info(cli_cluster)["hv2"]["zookeeper_server"]
    verb(cli_cluster, "zookeeper", "kill", "2")
    assert info(cli_cluster)["hv2"]["zookeeper_server"]["pid"] is None and not is_running(old["pid"])
    one_line_error(devcluster("zookeeper", "kill", "2", "--workdir", cli_cluster), "not running")
    verb(cli_cluster, "zookeeper", "start", "2")
    new = info(cli_cluster)["hv2"]["zookeeper_server"]
    assert is_running(new["pid"]) and new["client_port"] == old["client_port"]


def test_libvirtd_verbs(cli_cluster):
    old = info(cli_cluster)["hv3"]["libvirtd_pid"]
    verb(cli_cluster, "libvirtd", "kill", "hv3")
    assert info(cli_cluster)["hv3"]["libvirtd_pid"] is None and not is_running(old)
    verb(cli_cluster, "libvirtd", "start", "hv3")
    assert is_running(info(cli_cluster)["hv3"]["libvirtd_pid"])


@pytest.mark.parametrize("args, message", [
    (("kill", "hv9"), "no node 'hv9'"),
    (("thaw", "nope"), "no node 'nope'"),
    (("zookeeper", "kill", "7"), "no ZooKeeper server 7"),
    (("zookeeper", "start", "x"), "bad ZooKeeper server index 'x'"),
    (("libvirtd", "kill", "hv9"), "no node 'hv9'"),
])
def test_verbs_refuse_bad_input(cli_cluster, args, message):
    before = info(cli_cluster)
    one_line_error(devcluster(*args, "--workdir", cli_cluster), message)  # asserts: one line, non-zero exit
    assert info(cli_cluster) == before  # nothing was acted on


def test_verbs_without_a_cluster(tmp_path):
    # one_line_error asserts the one line, its text and the non-zero exit
    one_line_error(devcluster("kill", "hv1", "--workdir", str(tmp_path)), "no cluster in")
    one_line_error(devcluster("up", "--nodes", "2", "--zookeeper-servers", "3", "--workdir", str(tmp_path)),
                   "needs at least 3 coordinators")
    assert not (tmp_path / "cluster.json").exists()  # the refused `up` started and recorded nothing
