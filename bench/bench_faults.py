"""The fault-injection suite's engine for a given duration: operations, faults and violations.

A local 4-node cluster with a 3-server ZooKeeper ensemble (test driver), 24 VMs, concurrent `pvc`
clients with seeded random operations while seeded random faults hit (see tests/faults/engine.py).

Run: python -m bench.bench_faults [--seconds 240] [--seed N] [--clients 3] [--vms 24] [--keep DIR]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time

from tests.faults.engine import FaultRun, Settings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=240, help="how long operations and faults run")
    parser.add_argument("--seed", type=int, default=None, help="default: a fresh random seed (printed)")
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--vms", type=int, default=24)
    parser.add_argument("--settle", type=float, default=120, help="bound on convergence after the faults")
    parser.add_argument("--keep", default=None, help="a directory to keep the cluster's logs and timeline in")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**9)
    settings = Settings(seed=seed, seconds=args.seconds, clients=args.clients, vms=args.vms,
                        settle_timeout=args.settle)
    started = time.monotonic()
    if args.keep:
        report = FaultRun(args.keep, settings).run()
    else:
        with tempfile.TemporaryDirectory(prefix="pvc-bench-faults-") as workdir:
            report = FaultRun(workdir, settings).run()
    wall = time.monotonic() - started
    print()
    print(report.text())
    faults_phase = report.phases.get("faults", 0) or 1
    refused = sum(n for (_, outcome), n in report.ops.items() if outcome != "ok")
    print()
    print(f"figures: seed {seed}; wall {wall:.0f} s; operations {report.operations} "
          f"({report.operations / faults_phase * 60:.0f}/min, {refused} not ok); "
          f"faults {sum(report.faults.values())} ({sum(report.faults.values()) / faults_phase * 60:.1f}/min); "
          f"two-copies checks {report.copy_checks}; violations {len(report.violations)}")


if __name__ == "__main__":
    main()
