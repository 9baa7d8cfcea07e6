"""Seeded random operations and faults against a real 4-node cluster with a 3-server ZooKeeper
ensemble; the cluster's invariants must hold throughout and after quiescence (engine.py).

Bounded for CI (100 s of faults by default, about 3-4 minutes in all). Longer, or one seed again:

    PVC_FAULTS_SECONDS=1800 python -m pytest tests/faults -s
    PVC_FAULTS_SEED=123456 python -m pytest tests/faults -s
"""

from __future__ import annotations

import pytest

from tests.faults.engine import FAULT_KINDS, FaultRun, Settings

SETTINGS = Settings.from_env()


@pytest.mark.timeout(int(3 * SETTINGS.seconds + SETTINGS.settle_timeout + 600))
def test_random_operations_and_faults_keep_the_invariants(tmp_path):
    report = FaultRun(tmp_path, SETTINGS).run()
    text = report.text()
    print(text)
    seed = SETTINGS.seed
    again = f"PVC_FAULTS_SEED={seed} PVC_FAULTS_SECONDS={SETTINGS.seconds:g} python -m pytest tests/faults -s"
    assert not report.violations, (
        f"seed {seed}: {len(report.violations)} violation(s); reproduce with `{again}`\n"
        + "\n".join(report.violations[:30]) + f"\n\n{text}"
    )
    # The run did what it says: operations ran, and every kind of fault was injected.
    assert report.operations > 0, f"seed {seed}: no operation ran\n{text}"
    missing = [k for k in FAULT_KINDS if not report.faults[k]]
    assert not missing, f"seed {seed}: faults never injected: {missing}; errors: {report.fault_errors}\n{text}"
