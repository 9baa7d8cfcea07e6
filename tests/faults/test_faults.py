"""Seeded random operations and faults against a real 4-node cluster with a 3-server ZooKeeper
ensemble; the cluster's invariants must hold throughout and after quiescence (engine.py).

Bounded for CI (100 s of faults by default, about 2-2.5 minutes in all). Longer, or one seed again:

    PVC_FAULTS_SECONDS=1800 python -m pytest tests/faults -s
    PVC_FAULTS_SEED=123456 python -m pytest tests/faults -s
"""

from __future__ import annotations

import os

import pytest

from tests.faults.engine import FaultRun, Settings

SETTINGS = Settings.from_env()


@pytest.mark.timeout(int(3 * SETTINGS.seconds + SETTINGS.settle_timeout + 600))
def test_random_operations_and_faults_keep_the_invariants(tmp_path):
    report = FaultRun(tmp_path, SETTINGS).run()
    text = report.text()
    print(text)
    seed = SETTINGS.seed
    extra = " ".join(f"{k}={v}" for k, v in sorted(os.environ.items())
                     if k.startswith("PVC_FAULTS_") and k not in ("PVC_FAULTS_SEED", "PVC_FAULTS_SECONDS"))
    again = f"PVC_FAULTS_SEED={seed} PVC_FAULTS_SECONDS={SETTINGS.seconds:g} {extra} python -m pytest tests/faults -s"
    again = " ".join(again.split())
    assert not report.violations, (
        f"seed {seed}: {len(report.violations)} violation(s); reproduce with `{again}`\n"
        + "\n".join(report.violations[:30]) + f"\n\n{text}"
    )
    # The run did what it says: operations ran, and every kind of fault was injected.
    assert report.operations > 0, f"seed {seed}: no operation ran\n{text}"
    missing = [k for k in SETTINGS.faults if not report.faults[k]]
    assert not missing, f"seed {seed}: faults never injected: {missing}; errors: {report.fault_errors}\n{text}"


def test_the_watcher_sees_a_second_copy_at_once(tmp_path):
    """The continuous check is only worth its silence if it speaks: a copy made behind pvc's back
    (virsh create on another node) is reported, and both by the start event and by polling."""
    import subprocess
    import threading
    import time

    run = FaultRun(tmp_path, Settings(seed=0, nodes=2, zookeeper_servers=1, vms=2, min_vms=0), log=lambda _: None)
    try:
        run.setup()
        watcher = threading.Thread(target=run.watcher, daemon=True)
        watcher.start()
        running = {n: run.view.running(n) for n in run.nodes}
        node = next(n for n, names in running.items() if names)
        name = sorted(running[node])[0]
        other = next(n for n in run.nodes if n != node)
        xml = subprocess.run(["virsh", "-c", run.dev.node(node).libvirt_uri, "dumpxml", name],
                             capture_output=True, text=True, check=True).stdout
        (tmp_path / "copy.xml").write_text(xml)
        subprocess.run(["virsh", "-c", run.dev.node(other).libvirt_uri, "create", str(tmp_path / "copy.xml")],
                       capture_output=True, text=True, check=True)
        deadline = time.monotonic() + 20
        while not run.report.violations and time.monotonic() < deadline:
            time.sleep(0.1)
        assert run.report.violations and f"two copies: {name}" in run.report.violations[0], run.report.violations
        print(f"start checks {run.report.start_checks}, polls {run.report.copy_checks}")
    finally:
        run.stop_watch.set()
        run.events.close() if run.events else None
        run.dev.down()
