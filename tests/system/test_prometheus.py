"""A real Prometheus server (Debian's package, run as a plain process on 127.0.0.1) scrapes every
pvcd of a local cluster (test driver), and PromQL over what it stored agrees with pvc."""

from __future__ import annotations

import json
import subprocess
import urllib.parse
import urllib.request
from urllib.parse import urlparse

import pytest

from pvc.devcluster.proc import free_port
from tests.conftest import running_cluster, wait_until


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    yield from running_cluster(tmp_path_factory, 2)


@pytest.fixture
def prometheus(cluster, tmp_path):
    targets = [urlparse(n["metrics_url"]).netloc for n in cluster.dev.info()]
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({  # JSON is YAML
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "pvc", "static_configs": [{"targets": targets}]}],
    }))
    base = f"http://127.0.0.1:{free_port()}"
    log = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address={urlparse(base).netloc}"],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: _ready(base) or proc.poll() is not None, timeout=30, interval=0.1)
        assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
        yield base
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def _ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def query(base: str, promql: str) -> float | None:
    """The value of a query that gives one number (None: no data yet)."""
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    result = body["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def test_prometheus_scrapes_the_cluster(cluster, prometheus):
    cluster.define("p1", node="hv1", start=True)
    cluster.define("p2", node="hv2", start=True)
    cluster.define("p3", node="hv1")  # stopped
    running = [vm["name"] for vm in cluster.pvc_json("vm", "list") if vm["libvirt_state"] == "running"]
    assert sorted(running) == ["p1", "p2"]

    # Every daemon is scraped, and the VMs libvirt runs across the nodes are those pvc says run (pvc's
    # VMs: state is empty for a domain pvc does not know).
    wait_until(lambda: query(prometheus, 'sum(up{job="pvc"})') == 2, timeout=30, interval=0.5)
    wait_until(lambda: query(prometheus, 'count(pvc_vm_info{libvirt_state="running", state!=""})') == len(running),
               timeout=30, interval=0.5)
    # The primary's cluster-wide figures, and the nodes' own, agree with each other.
    assert query(prometheus, 'count(pvc_cluster_figures_ok == 1)') == 1  # one primary
    wait_until(lambda: query(prometheus, 'sum(pvc_cluster_vms{state="stop"})') == 1
               and query(prometheus, 'sum(pvc_node_vms{state="stop"})') == 1, timeout=30, interval=0.5)
    assert query(prometheus, 'sum(pvc_node_vcpus_allocated)') == 2
