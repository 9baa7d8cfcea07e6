"""The fault-injection engine: seeded random operations and faults against a real local cluster.

A run brings up a DevCluster (4 nodes, a 3-server ZooKeeper ensemble, libvirt's test driver),
defines VMs, then for ``seconds``:

- several client threads run the real ``pvc`` CLI with seeded random operations (start, stop,
  shutdown, restart, migrate with and without --force, unmigrate, move, node flush, node ready,
  define, undefine, and a quick stop/move/start sequence; some with --wait). A refusal (non-zero
  exit, one ``error:`` line) is a normal outcome, counted by its reason; a traceback, a
  multi-line error, or a command without --wait that never returns is a violation;
- one fault thread injects seeded random faults (sometimes two at once), each undone within a
  bounded time: pvcd kill -9 (then started again), pvcd frozen (SIGSTOP) past the ZooKeeper
  session timeout (then thawed), pvcd SIGTERM (then started), one ZooKeeper server kill -9 (then
  started), the whole ensemble restarted, a libvirtd kill -9 (then started), the CLI killed
  (SIGKILL) in the middle of a --wait;
- a watcher asks every node's libvirt every 0.5 s, and again at each VM start (libvirt events),
  whether any VM runs on two nodes.

Then the faults stop, every process is restored, and once the cluster settles (bounded) the
quiescent invariants are checked: every VM listed once, ZooKeeper agreeing with libvirt for every
VM, no flush lock entry held, no node stuck in flush/unflush, every daemon ``run``, no
``duplicate_on``, no transient state or pending hand-over left.

The seed fixes the random draws (which operation, which VM, which fault, how long); the timing of
a real cluster does not replay exactly, and some choices follow the cluster's state (the VMs of
the node a fault hits), so a seed repeats the same kinds of requests and faults, not necessarily
the same interleaving.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid as uuidlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import libvirt

from pvc.devcluster.cluster import DevCluster
from pvc.devcluster.proc import is_running, is_stopped, log_tail

PREFIX = "fz"
# The devcluster's pvcd config (DevCluster._write_config): zookeeper.session_timeout.
SESSION_TIMEOUT = 3.0
TRANSIENT_STATES = ("restart", "shutdown", "migrate")

FAULT_KINDS = ("kill_pvcd", "freeze_pvcd", "stop_pvcd", "kill_zookeeper", "restart_ensemble", "kill_libvirtd",
               "kill_cli_wait")
FAULT_WEIGHTS = {"kill_pvcd": 3, "freeze_pvcd": 3, "stop_pvcd": 1, "kill_zookeeper": 2, "restart_ensemble": 2,
                 "kill_libvirtd": 2, "kill_cli_wait": 2}
OP_WEIGHTS = {"start": 5, "stop": 3, "shutdown": 2, "restart": 2, "migrate": 3, "migrate_force": 2,
              "unmigrate": 2, "move": 3, "flush": 1, "ready": 2, "define": 1, "undefine": 1,
              # Issue 9's reproduction, as one client's quick sequence on one VM (often one on the
              # node a fault hits): stop (or shutdown), move/migrate it away, start it.
              "stop+move+start": 2}

FAULT_CATEGORY = {"kill_pvcd": "pvcd", "freeze_pvcd": "pvcd", "stop_pvcd": "pvcd", "kill_zookeeper": "zookeeper",
                  "restart_ensemble": "zookeeper", "kill_libvirtd": "libvirtd", "kill_cli_wait": "cli"}
OVERLAP = 0.3  # after the first round: the share of faults that come with a second one at the same time

WAIT_BOUND = 90.0      # a --wait still running after this is killed and counted ("timeout")
PLAIN_BOUND = 45.0     # a command without --wait still running after this is a violation (a hang)
CUT_GRACE = 15.0       # at the end of the run, commands still running get this long, then SIGKILL
POLL_INTERVAL = 0.5    # the two-copies watcher polls every node's libvirt this often


def vm_xml(name: str, memory_mib: int = 16) -> str:
    return (f"<domain type='test'><name>{name}</name><uuid>{uuidlib.uuid4()}</uuid>"
            f"<memory unit='MiB'>{memory_mib}</memory><vcpu>1</vcpu>"
            f"<os><type arch='x86_64'>hvm</type></os><devices></devices></domain>")


def pvc_executable() -> str:
    beside = Path(sys.executable).parent / "pvc"
    return str(beside) if beside.exists() else (shutil.which("pvc") or "pvc")


@dataclass
class Settings:
    seed: int
    seconds: float = 100.0       # how long operations and faults run
    nodes: int = 4
    zookeeper_servers: int = 3
    vms: int = 24                # defined at the start; undefine never takes the cluster below MIN_VMS
    min_vms: int = 20
    clients: int = 3
    settle_timeout: float = 75.0  # after the faults: how long the cluster may take to converge
    faults: tuple[str, ...] = FAULT_KINDS  # the kinds injected (all by default)

    @classmethod
    def from_env(cls, default_seconds: float = 100.0) -> Settings:
        """PVC_FAULTS_SEED (default: a fresh random seed), PVC_FAULTS_SECONDS (default 100),
        PVC_FAULTS_CLIENTS, PVC_FAULTS_VMS, PVC_FAULTS_SETTLE, PVC_FAULTS_ONLY (comma-separated
        fault kinds, to hammer one kind of fault)."""
        env = os.environ
        seed = int(env["PVC_FAULTS_SEED"]) if env.get("PVC_FAULTS_SEED") else random.SystemRandom().randrange(10**9)
        only = tuple(k.strip() for k in (env.get("PVC_FAULTS_ONLY") or "").split(",") if k.strip())
        unknown = [k for k in only if k not in FAULT_KINDS]
        if unknown:
            raise ValueError(f"PVC_FAULTS_ONLY: unknown fault kinds {unknown}; known: {', '.join(FAULT_KINDS)}")
        return cls(seed=seed, seconds=float(env.get("PVC_FAULTS_SECONDS") or default_seconds),
                   clients=int(env.get("PVC_FAULTS_CLIENTS") or 3), vms=int(env.get("PVC_FAULTS_VMS") or 24),
                   settle_timeout=float(env.get("PVC_FAULTS_SETTLE") or 75.0), faults=only or FAULT_KINDS)


@dataclass
class CliResult:
    rc: int | None
    out: str
    err: str
    seconds: float
    killed: str = ""  # "" | timeout | cut | fault


@dataclass
class Report:
    settings: Settings
    workdir: str
    ops: Counter = field(default_factory=Counter)        # (op, outcome) -> count
    reasons: Counter = field(default_factory=Counter)    # normalised refusal -> count
    faults: Counter = field(default_factory=Counter)     # kind -> count
    fault_notes: Counter = field(default_factory=Counter)
    fault_errors: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    not_converged: list[str] = field(default_factory=list)
    converged_after: float | None = None  # seconds from every process restored to every invariant holding
    copy_checks: int = 0    # polls of every node's libvirt
    start_checks: int = 0   # other nodes asked at a VM's start (libvirt event)
    phases: dict[str, float] = field(default_factory=dict)
    daemon_log_errors: Counter = field(default_factory=Counter)

    @property
    def operations(self) -> int:
        return sum(self.ops.values())

    def text(self) -> str:
        s = self.settings
        lines = [f"fault-injection run: seed {s.seed}, {s.seconds:g} s of faults, {s.nodes} nodes, "
                 f"{s.zookeeper_servers} ZooKeeper servers, {s.vms} VMs, {s.clients} clients",
                 f"workdir: {self.workdir} (timeline.log: every request and fault; cluster/hvN/pvcd.log)",
                 "phases: " + ", ".join(f"{k} {v:.0f} s" for k, v in self.phases.items())]
        by_op: dict[str, Counter] = {}
        for (op, outcome), n in self.ops.items():
            by_op.setdefault(op, Counter())[outcome] += n
        lines.append(f"operations: {self.operations}")
        for op in sorted(by_op):
            c = by_op[op]
            lines.append(f"  {op:14} {sum(c.values()):4}  " + ", ".join(f"{k} {v}" for k, v in c.most_common()))
        lines.append(f"refusals by reason: {sum(self.reasons.values())}")
        for reason, n in self.reasons.most_common():
            lines.append(f"  {n:4}  {reason}")
        lines.append(f"faults: {sum(self.faults.values())}  " + ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())))
        for note, n in sorted(self.fault_notes.items()):
            lines.append(f"  {note}: {n}")
        for err in self.fault_errors:
            lines.append(f"  fault error: {err}")
        lines.append(f"two-copies checks: {self.copy_checks} polls of every node's libvirt, "
                     f"{self.start_checks} at a VM's start (libvirt event)")
        if self.daemon_log_errors:
            lines.append("daemon log warnings and errors (by event): "
                         + ", ".join(f"{k} {v}" for k, v in self.daemon_log_errors.most_common()))
        if self.converged_after is not None:
            lines.append(f"quiescent invariants all held {self.converged_after:.1f} s after every process was restored")
        elif self.not_converged:
            lines.append(f"did not converge: {len(self.not_converged)} quiescent invariant(s) still broken")
        lines.append(f"violations: {len(self.violations)}")
        lines.extend(f"  {v}" for v in self.violations)
        return "\n".join(lines)


def normalise(message: str) -> str:
    """One refusal reason, with VM, node names and numbers taken out (for counting by kind)."""
    text = message.strip()
    text = re.sub(r"^error:\s*", "", text)
    text = re.sub(rf"'?{PREFIX}[-\w]*'?", "<vm>", text)
    text = re.sub(r"\bhv\d+\b", "<node>", text)
    text = re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}", "UUID", text)
    text = re.sub(r"127\.0\.0\.1:\d+(,127\.0\.0\.1:\d+)*", "ADDR", text)
    text = re.sub(r"/tmp/\S+", "PATH", text)
    text = re.sub(r"\d+(\.\d+)?", "N", text)
    return text[:110]


class LibvirtView:
    """libvirt's truth on every node, through libvirt-python (a connection per node, re-opened
    after its libvirtd dies). ``running(node)`` is None while that libvirtd cannot be asked."""

    def __init__(self, uris: dict[str, str]) -> None:
        libvirt.registerErrorHandler(lambda *_: None, None)
        self.uris = uris
        self.conns: dict[str, libvirt.virConnect] = {}
        self.lock = threading.Lock()

    def running(self, node: str) -> set[str] | None:
        with self.lock:
            conn = self.conns.get(node)
            try:
                if conn is None:
                    conn = self.conns[node] = libvirt.open(self.uris[node])
                doms = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
                return {d.name() for d in doms if d.name().startswith(PREFIX)}
            except libvirt.libvirtError:
                self.conns.pop(node, None)
                try:
                    if conn is not None:
                        conn.close()
                except libvirt.libvirtError:
                    pass
                return None

    def close(self) -> None:
        with self.lock:
            for conn in self.conns.values():
                try:
                    conn.close()
                except libvirt.libvirtError:
                    pass
            self.conns.clear()


_event_loop_started = False
_event_loop_lock = threading.Lock()


def start_event_loop() -> None:
    """libvirt's default event loop, once per process, pumped by a thread of its own (it must be
    registered before the connections whose events and keepalives it serves)."""
    global _event_loop_started
    with _event_loop_lock:
        if _event_loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def pump() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=pump, daemon=True, name="libvirt-events").start()
        _event_loop_started = True


class StartEvents:
    """libvirt lifecycle events from every node: each time a VM starts on a node, (vm, node) is put
    on ``queue``, so the watcher asks the other nodes at that very moment whether they still run it
    (a second copy that lasts less than a polling interval is caught too). Connections that die with
    their libvirtd are opened again every second."""

    def __init__(self, uris: dict[str, str]) -> None:
        import queue

        self.uris = uris
        self.queue: queue.Queue = queue.Queue()
        self.conns: dict[str, libvirt.virConnect] = {}
        self.dead: set[str] = set(uris)
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def start(self) -> None:
        start_event_loop()
        threading.Thread(target=self._connect, daemon=True).start()

    def _connect(self) -> None:
        while not self.stop.wait(1.0):
            for node in sorted(self.dead):
                try:
                    conn = libvirt.open(self.uris[node])
                    conn.registerCloseCallback(self._closed, node)
                    conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._event, node)
                    conn.setKeepAlive(2, 3)
                except libvirt.libvirtError:
                    continue
                with self.lock:
                    old = self.conns.pop(node, None)
                    self.conns[node] = conn
                    self.dead.discard(node)
                if old is not None:
                    try:
                        old.close()
                    except libvirt.libvirtError:
                        pass

    def _closed(self, _conn, _reason, node) -> None:
        with self.lock:
            self.dead.add(node)

    def _event(self, _conn, dom, event, _detail, node) -> None:
        if event == libvirt.VIR_DOMAIN_EVENT_STARTED and dom.name().startswith(PREFIX):
            self.queue.put((dom.name(), node))

    def close(self) -> None:
        self.stop.set()
        with self.lock:
            for conn in self.conns.values():
                try:
                    conn.close()
                except libvirt.libvirtError:
                    pass
            self.conns.clear()


class FaultRun:
    def __init__(self, workdir: str | Path, settings: Settings, log=print) -> None:
        self.workdir = Path(workdir)
        self.settings = settings
        self.say = log
        self.report = Report(settings=settings, workdir=str(self.workdir))
        self.dev = DevCluster(self.workdir / "cluster")
        self.lock = threading.Lock()
        self.t0 = time.monotonic()
        self.timeline: list[str] = []
        self.timeline_file = None  # <workdir>/timeline.log, written as the run goes
        # What the clients know for sure about which VMs exist.
        self.present: set[str] = set()
        self.uncertain: set[str] = set()
        self.gone: set[str] = set()
        self.defined_by_clients = 0
        self.stop_ops = threading.Event()
        self.stop_faults = threading.Event()
        self.stop_watch = threading.Event()
        self.cut = threading.Event()
        self.cut_at = 0.0
        # VMs of the nodes a fault hits right now: the clients aim at them more often.
        self.hot_by_node: dict[str, list[str]] = {}
        self.doubled: dict[str, float] = {}  # VM -> since when it runs twice (watcher)
        self.flushed_at: dict[str, float] = {}  # node -> when a client last asked it to flush or ready
        self.pvc = pvc_executable()
        self.view: LibvirtView | None = None
        self.events: StartEvents | None = None
        self.nodes: list[str] = []
        self.env: dict[str, str] = {}

    # -- bookkeeping ---------------------------------------------------------------------------

    def now(self) -> float:
        return time.monotonic() - self.t0

    def note(self, who: str, what: str) -> None:
        line = f"{self.now():8.2f} {who:8} {what}"
        with self.lock:
            self.timeline.append(line)
            if self.timeline_file:
                self.timeline_file.write(line + "\n")
                self.timeline_file.flush()

    def violation(self, what: str) -> None:
        text = f"[{self.now():.1f} s] {what}"
        with self.lock:
            self.report.violations.append(text)
            self.timeline.append(f"{self.now():8.2f} VIOLATION {what}")
            if self.timeline_file:
                self.timeline_file.write(self.timeline[-1] + "\n")
                self.timeline_file.flush()
        self.say(f"VIOLATION {text}")

    # -- the CLI -------------------------------------------------------------------------------

    def cli(self, args: list[str], bound: float, client: bool = False) -> CliResult:
        """Run ``pvc``; killed past ``bound``, and (a client's) once the run is over and CUT_GRACE passed."""
        start = time.monotonic()
        proc = subprocess.Popen([self.pvc, *args], env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        killed = ""
        while True:
            try:
                out, err = proc.communicate(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                elapsed = time.monotonic() - start
                if elapsed > bound:
                    killed = "timeout"
                elif client and self.cut.is_set() and time.monotonic() - self.cut_at > CUT_GRACE:
                    killed = "cut"
                if killed:
                    proc.kill()
                    out, err = proc.communicate()
                    break
        return CliResult(proc.returncode, out or "", err or "", time.monotonic() - start, killed)

    def cli_json(self, *args: str):
        res = self.cli([*args, "-o", "json"], PLAIN_BOUND)
        if res.rc != 0:
            raise RuntimeError(f"pvc {' '.join(args)} -o json: exit {res.rc}: {res.err.strip()[:300]}")
        return json.loads(res.out)

    def judge(self, who: str, op: str, args: list[str], res: CliResult, wait: bool) -> str:
        """The outcome's kind; records violations (a traceback, a multi-line error, a hang)."""
        command = "pvc " + " ".join(args)
        noise = [m for m in ("Traceback (most recent call last)", "Exception ignored", "Task was destroyed",
                             "Task exception was never retrieved", "RuntimeWarning") if m in res.err or m in res.out]
        if noise and not res.killed:
            self.violation(f"{who}: `{command}` (exit {res.rc}) printed {noise[0]!r}:\n"
                           + "\n".join("      " + line for line in (res.err.strip().splitlines())[-25:]))
        if res.killed == "timeout":
            if not wait:
                self.violation(f"{who}: `{command}` did not return within {PLAIN_BOUND:g} s (killed)")
            return "timeout"
        if res.killed == "cut":
            return "cut at the end"
        if res.rc == 0:
            return "ok"
        errors = [line for line in res.err.splitlines() if line.startswith("error:")]
        if len(errors) != 1 and not noise:
            self.violation(f"{who}: `{command}` exit {res.rc} without exactly one `error:` line:\n"
                           + "\n".join("      " + line for line in (res.err.strip() or res.out.strip()).splitlines()[-25:]))
            return "malformed error"
        reason = normalise(errors[0]) if errors else "traceback"
        with self.lock:
            self.report.reasons[f"{op}: {reason}"] += 1
        return "unavailable" if res.rc == 3 else "refused"

    # -- setup ---------------------------------------------------------------------------------

    def setup(self) -> None:
        s = self.settings
        self.dev.up(nodes=s.nodes, zookeeper_servers=s.zookeeper_servers, timeout=120)
        self.nodes = [n.name for n in self.dev.state.nodes]
        self.env = {**os.environ, "PVC_ZOOKEEPER": self.dev.state.zookeeper}
        uris = {n.name: n.libvirt_uri for n in self.dev.state.nodes}
        start_event_loop()  # before any connection: events and keepalives
        self.events = StartEvents(uris)
        self.events.start()
        self.view = LibvirtView(uris)
        names = [f"{PREFIX}-{i:03d}" for i in range(s.vms)]
        rng = random.Random(f"{s.seed}-setup")
        started = [n for n in names if rng.random() < 0.7]
        asyncio.run(self._define(names, set(started)))
        self.present = set(names)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            running = set().union(*(self.view.running(n) or set() for n in self.nodes))
            if set(started) <= running:
                break
            time.sleep(0.5)
        else:
            raise RuntimeError(f"setup: VMs not running after 120 s: {sorted(set(started) - running)}")

    async def _define(self, names: list[str], started: set[str]) -> None:
        import msgspec

        from pvc import store
        from pvc.domain_xml import parse_domain_xml
        from pvc.zk import ZK

        zk = ZK(self.dev.state.zookeeper, request_timeout=30)
        await zk.start()
        try:
            for i, name in enumerate(names):
                text = vm_xml(name)
                dom = await store.define_domain(zk, parse_domain_xml(text), text, target=self.nodes[i % len(self.nodes)],
                                                selector="", node_limit=[], autostart=False, migration_method="")
                if name in started:
                    await store.update_domain(zk, dom.uuid, lambda d: msgspec.structs.replace(d, state="start"))
        finally:
            await zk.close()

    # -- clients -------------------------------------------------------------------------------

    def candidates(self) -> list[str]:
        with self.lock:
            return sorted(self.present | self.uncertain)

    def build(self, rng: random.Random, client: int, op: str, wait_share: float = 0.3) -> tuple[list[str], bool]:
        wait = rng.random() < wait_share
        w = ["--wait"] if wait else []
        if op in ("flush", "ready"):
            return ["node", op, rng.choice(self.nodes), *w], wait
        if op == "define":
            with self.lock:
                self.defined_by_clients += 1
                name = f"{PREFIX}-c{client}-{self.defined_by_clients:03d}"
            path = self.workdir / "xml" / f"{name}.xml"
            path.parent.mkdir(exist_ok=True)
            path.write_text(vm_xml(name))
            extra = (["--target", rng.choice(self.nodes)] if rng.random() < 0.5 else []) + \
                (["--start"] if rng.random() < 0.5 else [])
            return ["vm", "define", str(path), *extra], False
        hot = self.hot
        vm = rng.choice(hot) if hot and rng.random() < 0.5 else rng.choice(self.candidates())
        if op == "undefine":
            return ["vm", "undefine", vm, "--yes"], False
        if op in ("start", "stop", "shutdown", "restart"):
            return ["vm", op, vm, *w], wait
        if op == "unmigrate":
            return ["vm", "unmigrate", vm, *w], wait
        target = ["--target", rng.choice(self.nodes)] if rng.random() < 0.6 else []
        if op == "migrate_force":
            return ["vm", "migrate", vm, *target, "--force", *w], wait
        return ["vm", op, vm, *target, *w], wait  # migrate, move

    def build_sequence(self, rng: random.Random) -> list[tuple[str, list[str], bool]]:
        hot = self.hot
        vm = rng.choice(hot) if hot and rng.random() < 0.8 else rng.choice(self.candidates())
        stop = rng.choice(["stop", "shutdown"])
        move = rng.choice(["move", "migrate", "migrate_force"])
        target = rng.choice(self.nodes)
        wait = rng.random() < 0.5
        return [
            (f"seq {stop}", ["vm", stop, vm], False),
            (f"seq {move}", ["vm", move.removesuffix("_force"), vm, "--target", target]
             + (["--force"] if move == "migrate_force" else []), False),
            ("seq start", ["vm", "start", vm] + (["--wait"] if wait else []), wait),
        ]

    def client(self, index: int) -> None:
        rng = random.Random(f"{self.settings.seed}-client-{index}")
        kinds, weights = zip(*OP_WEIGHTS.items())
        who = f"client{index}"
        while not self.stop_ops.is_set():
            op = rng.choices(kinds, weights)[0]
            if op == "undefine" and len(self.present) <= self.settings.min_vms:
                op = "define"
            if op == "stop+move+start":
                steps = self.build_sequence(rng)
            else:
                steps = [(op, *self.build(rng, index, op))]
            for step, args, wait in steps:
                if self.stop_ops.is_set():
                    break
                if step in ("flush", "ready"):
                    with self.lock:
                        self.flushed_at[args[2]] = self.now()
                self.note(who, "pvc " + " ".join(args))
                res = self.cli(args, WAIT_BOUND if wait else PLAIN_BOUND, client=True)
                outcome = self.judge(who, step, args, res, wait)
                self.note(who, f"  -> {outcome} (exit {res.rc}, {res.seconds:.1f} s) "
                               f"{(res.err.strip().splitlines() or [''])[-1][:160]}")
                self.track(step, args, res, outcome)
                with self.lock:
                    self.report.ops[(step + (" --wait" if wait else ""), outcome)] += 1
            self.stop_ops.wait(rng.uniform(0.1, 0.8))

    def track(self, op: str, args: list[str], res: CliResult, outcome: str) -> None:
        if op not in ("define", "undefine"):
            return
        name = Path(args[2]).stem if op == "define" else args[2]
        with self.lock:
            if outcome == "ok":
                if op == "define":
                    self.present.add(name)
                    self.uncertain.discard(name)
                else:
                    self.present.discard(name)
                    self.uncertain.discard(name)
                    self.gone.add(name)
            elif outcome != "refused":  # unavailable, killed: it may or may not have been written
                if name not in self.gone:
                    self.present.discard(name)
                    self.uncertain.add(name)

    # -- faults --------------------------------------------------------------------------------
    # Each fault is planned first (every random choice drawn from the fault thread's generator, in
    # order, so a seed fixes them) and then applied: done, held for a bounded time, undone.

    def injector(self) -> None:
        rng = random.Random(f"{self.settings.seed}-faults")
        first = list(self.settings.faults)
        rng.shuffle(first)  # every kind once first, so a short run sees them all
        kinds, weights = zip(*((k, w) for k, w in FAULT_WEIGHTS.items() if k in self.settings.faults))
        self.stop_faults.wait(rng.uniform(2, 5))
        while not self.stop_faults.is_set() or first:
            chosen = [first.pop(0) if first else rng.choices(kinds, weights)[0]]
            if not first and rng.random() < OVERLAP:
                # A second fault of another kind at the same time (another node, if it hits one).
                others = [k for k in kinds if FAULT_CATEGORY[k] != FAULT_CATEGORY[chosen[0]]]
                if others:
                    chosen.append(rng.choice(others))
            self.check_crashes()
            plans, busy = [], set()
            for kind in chosen:
                text, action, nodes = getattr(self, f"plan_{kind}")(rng, busy)
                busy |= nodes
                plans.append((kind, text, action, rng.uniform(0, 2) if plans else 0.0))
            threads = [threading.Thread(target=self.apply, args=plan, daemon=True) for plan in plans]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=600)
            if self.stop_faults.is_set() and not first:
                break
            self.stop_faults.wait(rng.uniform(1.5, 5))
            if self.now() > self.hard_end:
                break

    def apply(self, kind: str, text: str, action, delay: float) -> None:
        time.sleep(delay)
        self.note("faults", f"{kind}: {text}")
        try:
            action()
            with self.lock:
                self.report.faults[kind] += 1
        except Exception as exc:  # noqa: BLE001 - recorded, repaired at the end
            msg = f"{kind}: {type(exc).__name__}: {str(exc)[:300]}"
            self.note("faults", f"ERROR {msg}")
            with self.lock:
                self.report.fault_errors.append(msg)
        self.note("faults", f"{kind} undone")

    @property
    def hot(self) -> list[str]:
        with self.lock:
            return [name for names in self.hot_by_node.values() for name in names]

    def aim_at(self, node: str) -> None:
        """While a fault hits ``node``, the clients aim half their VM operations at its VMs: the
        requests that could make a second copy (stop, move, start while it cannot act) get made."""
        try:
            names = [v["name"] for v in self.cli_json("vm", "list") if v["node"] == node]
        except Exception:  # noqa: BLE001 - ZooKeeper may be restarting; the clients pick at random then
            names = []
        with self.lock:
            self.hot_by_node[node] = names

    def aim_off(self, node: str) -> None:
        with self.lock:
            self.hot_by_node.pop(node, None)

    def check_crashes(self) -> None:
        """A daemon that exited without being killed by us crashed: a violation (then restarted)."""
        for n in self.dev.state.nodes:
            if n.pvcd_pid is not None and not is_running(n.pvcd_pid):
                self.violation(f"pvcd on {n.name} exited by itself; tail of its log:\n"
                               + log_tail(Path(n.pvcd_log), 15))
                n.pvcd_pid = None
                self.dev.start_node(n.name, wait=False)

    def pick_node(self, rng: random.Random, busy: set[str]) -> str:
        """Half the time a node a client flushed or readied in the last 15 s (its flush may be
        running: the fault lands in the middle of it), else any node not hit already."""
        with self.lock:
            recent = sorted(n for n, t in self.flushed_at.items() if self.now() - t < 15 and n not in busy)
        # As many draws whatever the timing, so the seed keeps fixing the later choices.
        aim, pick = rng.random() < 0.5, rng.random()
        anyone = rng.choice([n for n in self.nodes if n not in busy] or self.nodes)
        return recent[int(pick * len(recent))] if aim and recent else anyone

    def plan_kill_pvcd(self, rng, busy):
        node, down = self.pick_node(rng, busy), rng.uniform(1, 6)

        def action():
            self.aim_at(node)
            self.dev.kill_node(node)
            try:
                time.sleep(down)
            finally:
                self.aim_off(node)
                self.dev.start_node(node, wait=True, timeout=60)

        return f"kill -9 pvcd on {node}, start it again after {down:.1f} s", action, {node}

    def plan_stop_pvcd(self, rng, busy):
        node, down = self.pick_node(rng, busy), rng.uniform(1, 6)

        def action():
            self.aim_at(node)
            try:
                if not self.dev.stop_node(node, signal.SIGTERM, timeout=10):
                    self.violation(f"pvcd on {node} did not exit within 10 s of SIGTERM (killed)")
                time.sleep(down)
            finally:
                self.aim_off(node)
                self.dev.start_node(node, wait=True, timeout=60)

        return f"SIGTERM pvcd on {node} (a clean stop), start it again after {down:.1f} s", action, {node}

    def plan_freeze_pvcd(self, rng, busy):
        # Past the session timeout: ZooKeeper expires the daemon's session while it is stopped.
        node, frozen = self.pick_node(rng, busy), rng.uniform(SESSION_TIMEOUT + 0.5, SESSION_TIMEOUT + 5)

        def action():
            self.aim_at(node)
            self.dev.freeze_node(node)
            try:
                time.sleep(frozen)
            finally:
                self.aim_off(node)
                self.dev.thaw_node(node)

        return f"freeze (SIGSTOP) pvcd on {node} for {frozen:.1f} s, then thaw", action, {node}

    def plan_kill_zookeeper(self, rng, busy):
        index, down = rng.choice(self.dev.zookeeper_indexes), rng.uniform(2, 8)

        def action():
            self.dev.kill_zookeeper(index)
            try:
                time.sleep(down)
            finally:
                self.dev.start_zookeeper(index, timeout=60)

        return f"kill -9 ZooKeeper server {index}, start it again after {down:.1f} s", action, set()

    def plan_restart_ensemble(self, rng, busy):
        down, how = rng.uniform(0.5, 4), rng.choice(["SIGTERM", "SIGKILL"])

        def action():
            try:
                if how == "SIGKILL":
                    for index in self.dev.zookeeper_indexes:
                        self.dev.kill_zookeeper(index)
                else:
                    self.dev.stop_zookeeper()
                time.sleep(down)
            finally:
                for z in self.dev.state.zookeeper_servers:
                    if not is_running(z.pid):
                        self.dev.start_zookeeper(z.index, timeout=60)

        return f"the whole ensemble down ({how}) for {down:.1f} s, then started", action, set()

    def plan_kill_libvirtd(self, rng, busy):
        node, down = self.pick_node(rng, busy), rng.uniform(1, 5)

        def action():
            self.aim_at(node)
            self.dev.kill_libvirtd(node)
            try:
                time.sleep(down)
            finally:
                self.aim_off(node)
                self.dev.start_libvirtd(node)

        return f"kill -9 libvirtd on {node}, start it again after {down:.1f} s", action, {node}

    def plan_kill_cli_wait(self, rng, busy):
        # The slower --wait operations more often, so that the kill lands while it waits.
        op = rng.choice(["start", "stop", "shutdown", "restart", "restart", "migrate", "migrate_force", "move",
                         "move", "unmigrate", "flush", "flush", "ready", "ready"])
        args, _ = self.build(rng, 0, op, wait_share=1.0)
        after = rng.uniform(0.0, 0.5)

        def action():
            # Killed `after` seconds once it says it waits (its first line on stderr, such as
            # "Waiting for VM ..." or "Flushing node ..."): the request is written, the CLI follows it.
            proc = subprocess.Popen([self.pvc, *args], env=self.env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True, start_new_session=True)
            said = threading.Event()
            lines: list[str] = []

            def read() -> None:
                for line in proc.stderr:
                    lines.append(line)
                    said.set()

            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            said.wait(timeout=20)
            try:
                proc.wait(timeout=after)
                reader.join(timeout=5)
                outcome = "refused" if any(x.startswith("error:") for x in lines) else "finished before the kill"
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                outcome = "killed while it waited" if said.is_set() else "killed before it said anything"
            reader.join(timeout=5)
            with self.lock:
                self.report.fault_notes[f"kill_cli_wait: {outcome}"] += 1
            self.note("faults", f"kill_cli_wait: {outcome}")

        return f"pvc {' '.join(args)}, SIGKILL {after:.1f} s after it says it waits", action, set()

    # -- the continuous invariant ----------------------------------------------------------------

    def watcher(self) -> None:
        """No VM on two nodes: every node's libvirt polled every POLL_INTERVAL, and asked again the
        moment libvirt reports a VM started anywhere."""
        import queue

        next_poll = 0.0
        while not self.stop_watch.is_set():
            try:
                name, node = self.events.queue.get(timeout=max(0.0, next_poll - time.monotonic()))
            except queue.Empty:
                name = node = None
            if name:
                others = {n: self.view.running(n) for n in self.nodes if n != node}
                if any(name in (names or ()) for names in others.values()):
                    self.confirm_doubled(name, [node, *(n for n, names in others.items() if name in (names or ()))])
                self.report.start_checks += 1
                continue
            views = {n: self.view.running(n) for n in self.nodes}
            where: dict[str, list[str]] = {}
            for n, names in views.items():
                for vm in names or ():
                    where.setdefault(vm, []).append(n)
            doubled_now = {vm for vm, nodes in where.items() if len(nodes) > 1 and self.confirm_doubled(vm, nodes)}
            for vm in list(self.doubled):
                if vm not in doubled_now:
                    self.note("watcher", f"{vm}: second copy gone after {self.now() - self.doubled.pop(vm):.1f} s")
            self.report.copy_checks += 1
            next_poll = time.monotonic() + POLL_INTERVAL

    def confirm_doubled(self, name: str, nodes: list[str]) -> bool:
        """The nodes were read one after another: a VM moving between two reads would look doubled.
        Ask again in the other order; a real second copy is still there."""
        again = {n: self.view.running(n) for n in reversed(nodes)}
        both = [n for n in nodes if again[n] is not None and name in again[n]]
        if len(both) < 2:
            return False
        if name not in self.doubled:
            self.doubled[name] = self.now()
            self.violation(f"two copies: {name} runs on {', '.join(both)} (libvirt)")
        return True

    # -- quiescence ----------------------------------------------------------------------------

    def restore(self) -> None:
        """Every process back: all ZooKeeper servers, libvirtds and daemons running, none frozen."""
        self.check_crashes()
        for z in self.dev.state.zookeeper_servers:
            if not is_running(z.pid):
                self.note("restore", f"start ZooKeeper server {z.index}")
                self.dev.start_zookeeper(z.index, timeout=60)
        for n in self.dev.state.nodes:
            if not self.dev.libvirtd(n).pid:
                self.note("restore", f"start libvirtd on {n.name}")
                self.dev.start_libvirtd(n.name)
        for n in self.dev.state.nodes:
            if n.pvcd_pid and is_stopped(n.pvcd_pid):
                self.note("restore", f"thaw pvcd on {n.name}")
                os.kill(n.pvcd_pid, signal.SIGCONT)
            if not is_running(n.pvcd_pid):
                self.note("restore", f"start pvcd on {n.name}")
                n.pvcd_pid = None
                self.dev.start_node(n.name, wait=False)
        try:
            self.dev.wait_running(self.nodes, timeout=60)
        except RuntimeError as exc:  # a daemon that runs but does not come back is the product's fault
            self.violation(f"after every process was restored: {exc}")

    def flush_lock_entries(self) -> list[str]:
        from pvc.schema import Paths
        from pvc.zk import ZK

        async def read() -> list[str]:
            zk = ZK(self.dev.state.zookeeper, request_timeout=5)
            await zk.start()
            try:
                return await zk.children(Paths.flush_lock)
            finally:
                await zk.close()

        return asyncio.run(read())

    def quiescent_problems(self) -> list[str]:
        """Every quiescent invariant that does not hold now (empty: all hold)."""
        problems: list[str] = []
        try:
            vms = self.cli_json("vm", "list")
            nodes = self.cli_json("node", "list")
            locks = self.flush_lock_entries()
        except Exception as exc:  # noqa: BLE001
            return [f"cannot read the cluster state: {exc}"]
        running = {n: self.view.running(n) for n in self.nodes}
        for n, names in running.items():
            if names is None:
                problems.append(f"libvirtd on {n} does not answer")
        where: dict[str, list[str]] = {}
        for n, names in running.items():
            for name in names or ():
                where.setdefault(name, []).append(n)
        listed = Counter(v["name"] for v in vms)
        for name, count in listed.items():
            if count > 1:
                problems.append(f"{name} is listed {count} times by `pvc vm list`")
        uuids = Counter(v["uuid"] for v in vms)
        for u, count in uuids.items():
            if count > 1:
                problems.append(f"UUID {u} is listed {count} times")
        with self.lock:
            present, gone = set(self.present), set(self.gone)
        for name in sorted(present - set(listed)):
            problems.append(f"{name} vanished from the cluster state (defined, never undefined)")
        for name in sorted(gone & set(listed)):
            problems.append(f"{name} is still listed after a successful undefine")
        for name in sorted(set(where) - set(listed)):
            problems.append(f"{name} runs on {where[name]} (libvirt) but pvc does not know it")
        for v in vms:
            name, runs = v["name"], sorted(where.get(v["name"], []))
            desc = (f"state={v['state']} node={v['node']} libvirt_state={v['libvirt_state']} "
                    f"target_node={v['target_node'] or '-'} libvirt runs it on {runs or 'no node'}")
            if v["duplicate_on"]:
                problems.append(f"{name}: duplicate_on={v['duplicate_on']} ({desc})")
            if v["state"] in TRANSIENT_STATES:
                problems.append(f"{name}: still {v['state']} ({desc})")
            elif v["target_node"]:
                problems.append(f"{name}: pending hand-over to {v['target_node']} not carried out ({desc})")
            if v["libvirt_state"] == "running":
                if runs != [v["node"]]:
                    problems.append(f"{name}: ZooKeeper says running on {v['node']}, libvirt disagrees ({desc})")
            elif runs:
                problems.append(f"{name}: ZooKeeper says {v['libvirt_state']}, libvirt disagrees ({desc})")
            if v["state"] == "start" and v["libvirt_state"] != "running":
                problems.append(f"{name}: wanted running but not running ({desc})")
            if v["state"] in ("stop", "disable", "fail") and v["libvirt_state"] == "running":
                problems.append(f"{name}: {v['state']} but recorded running ({desc})")
        for n in nodes:
            if n["daemon_state"] != "run":
                problems.append(f"node {n['name']}: daemon_state {n['daemon_state']}")
            if n["domain_state"] in ("flush", "unflush"):
                problems.append(f"node {n['name']}: stuck in domain_state {n['domain_state']}")
        if locks:
            problems.append(f"flush lock entries still held: {sorted(locks)}")
        return problems

    def settle(self) -> None:
        started = time.monotonic()
        deadline = started + self.settings.settle_timeout
        problems: list[str] = []
        while True:
            problems = self.quiescent_problems()
            if not problems:
                self.report.converged_after = time.monotonic() - started
                self.note("settle", f"all quiescent invariants hold ({self.report.converged_after:.1f} s after restore)")
                return
            if time.monotonic() > deadline:
                break
            time.sleep(2)
        self.report.not_converged = problems
        for p in problems:
            self.violation(f"after {self.settings.settle_timeout:g} s of quiescence: {p}")

    def scan_daemon_logs(self) -> None:
        for n in self.dev.state.nodes:
            try:
                text = Path(n.pvcd_log).read_text(errors="replace")
            except OSError:
                continue
            for line in text.splitlines():
                if "Traceback (most recent call last)" in line:
                    self.report.daemon_log_errors[f"{n.name}: traceback"] += 1
                m = re.search(r"\[(error|warning|critical)\s*\]\s+(\w+)", line)
                if m:
                    self.report.daemon_log_errors[f"{m.group(1)} {m.group(2)}"] += 1

    # -- the run -------------------------------------------------------------------------------

    def run(self) -> Report:
        s = self.settings
        self.say(f"fault-injection run: seed {s.seed}, {s.seconds:g} s (PVC_FAULTS_SEED={s.seed} reproduces its choices)")
        phase = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.timeline_file = open(self.workdir / "timeline.log", "a")
        try:
            self.setup()
            self.report.phases["setup"] = time.monotonic() - phase
            phase = time.monotonic()
            self.t0 = time.monotonic()
            # Faults run at least until every kind was injected once, but never past twice the duration.
            self.hard_end = max(2 * s.seconds, s.seconds + 120)
            threads = [threading.Thread(target=self.client, args=(i,), daemon=True) for i in range(1, s.clients + 1)]
            injector = threading.Thread(target=self.injector, daemon=True)
            watcher = threading.Thread(target=self.watcher, daemon=True)
            for t in [watcher, injector, *threads]:
                t.start()
            self.stop_faults.wait(s.seconds)  # never set by anyone else: a bounded sleep
            self.stop_faults.set()
            injector.join(timeout=300)
            self.stop_ops.set()
            self.cut.set()
            self.cut_at = time.monotonic()
            for t in threads:
                t.join(timeout=CUT_GRACE + WAIT_BOUND + 10)
            self.report.phases["faults"] = time.monotonic() - phase
            phase = time.monotonic()
            self.note("restore", "faults stopped; restoring every process")
            self.restore()
            self.settle()
            self.report.phases["settle"] = time.monotonic() - phase
            self.stop_watch.set()
            watcher.join(timeout=30)
            self.scan_daemon_logs()
        finally:
            self.stop_ops.set()
            self.stop_faults.set()
            self.stop_watch.set()
            self.cut.set()
            with self.lock:
                self.timeline_file.close()
                self.timeline_file = None
            if self.events:
                self.events.close()
            if self.view:
                self.view.close()
            self.dev.down()
        return self.report
