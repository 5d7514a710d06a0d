"""One chaos run end to end: lab, swarm, workload under faults, heal, quiesce, final reads, checks, report.

Everything runs inside ``try/finally``: whatever happens (an anomaly, a harness error, Ctrl-C), the
threads stop, the faults are lifted and the lab is torn down, and the run says whether anything of it
was left behind.
"""

from __future__ import annotations

import random
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from swarmsecrets.api.v1 import control_pb2
from swarmsecrets.client import LocalError
from tests.chaoskit import checker, report
from tests.chaoskit.checker import Anomalies, Cut, Expected, Op, Snapshot
from tests.chaoskit.lab import RUN_ROOT, Lab, namespaces, shm_dirs, stray_pids, teardown
from tests.chaoskit.nemesis import DEFAULT_FAULTS, FaultSpec, Nemesis, random_schedule
from tests.chaoskit.swarm import CHAOS_TIMINGS, SERVICE, Swarm, sha
from tests.framework import Timings
from tests.chaoskit.workload import (
    ATTEMPT_TIMEOUT,
    TARGET,
    ClientProcess,
    History,
    LeaderMonitor,
    Poller,
    ServiceFlipper,
    channel,
    record_op,
)
from swarmsecrets.client import DEFAULT_RETRY

# Flipped at target "cur" (see ServiceFlipper for the order).
POOL = [f"B_{i}" for i in range(6)]
STATIC = ("B_s", "static")  # bound for the whole run
FILE_META = (0, 0, 0o444)  # the default owner and mode of a secret file
QUIESCE_TIMEOUT = 30.0
CONVERGE_TIMEOUT = 45.0
# A worker must apply a change within GRACE s of its acknowledgement when nothing disturbs it; after a
# fault or leader change it may need RECONNECT s more (session backoff up to 8 s ± 50 %, plus a session).
GRACE = 3.0
RECONNECT = 15.0
# Lets an assignment that was in flight when a worker was cut off land before "untouched" is checked.
CUT_SETTLE = 0.5


@dataclass
class RunConfig:
    managers: int = 3
    workers: int = 2
    duration: float = 60.0
    faults: tuple[str, ...] = DEFAULT_FAULTS
    rate: float = 20.0
    seed: int | None = None
    out: Path = Path("/var/tmp/swarmsecrets-chaos-runs/run")
    prefix: str = "chaos"
    schedule: list[FaultSpec] | None = None
    timings: Timings = CHAOS_TIMINGS
    clients: int = 4
    log_level: str = "info"
    command: str = ""
    # How long workers get to reach the final binding after the heal (reconnect backoff is up to 12 s).
    converge_timeout: float = CONVERGE_TIMEOUT


@dataclass
class RunResult:
    config: RunConfig
    seed: int
    out: Path
    anomalies: Anomalies = field(default_factory=dict)
    error: str = ""
    leftovers_before: list[str] = field(default_factory=list)
    leftovers_after: list[str] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)
    leaders: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.anomalies and not self.error and not self.leftovers_after

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for o in self.ops:
            counts[o.type] = counts.get(o.type, 0) + 1
        faults = ", ".join(f"{f['fault']}({'+'.join(f['nodes'])})" for f in self.faults) or "none"
        kinds = ", ".join(f"{k}: {len(v)}" for k, v in sorted(self.anomalies.items())) or "none"
        lines = [f"{'PASS' if self.ok else 'FAIL'}: seed {self.seed}, out {self.out}",
                 f"  faults injected ({len(self.faults)}): {faults}",
                 f"  ops: {len(self.ops)} ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})",
                 f"  anomalies: {kinds}"]
        if self.error:
            lines.append(f"  error: {self.error}")
        if self.leftovers_before:
            lines.append(f"  cleaned up leftovers of an earlier run: {', '.join(self.leftovers_before)}")
        if self.leftovers_after:
            lines.append(f"  LEFT BEHIND: {', '.join(self.leftovers_after)}")
        return "\n".join(lines)


def leftovers(prefix: str) -> list[str]:
    """What a lab with this prefix still has on the machine: namespaces (and the processes in them),
    daemons outside them, secrets roots (tmpfs mounts live in the daemons' mount namespaces), the run dir."""
    found = [f"netns {ns}" for ns in namespaces(prefix)]
    found += [str(d) for d in shm_dirs(prefix)]
    found += [f"process {pid}" for pid in stray_pids(prefix)]
    if (RUN_ROOT / prefix).exists():
        found.append(str(RUN_ROOT / prefix))
    return found


class _Run:
    def __init__(self, cfg: RunConfig, result: RunResult) -> None:
        self.cfg = cfg
        self.result = result
        self.rng = random.Random(result.seed)
        self.out = result.out
        # Processes outlive the workload by setup, quiescence and teardown at most; then they die anyway.
        self.lab = Lab(cfg.prefix, cfg.managers + cfg.workers, log_dir=self.out / "logs", ttl=cfg.duration + 600)
        self.history = History(self.out / "history.jsonl")
        self.stop_clients = threading.Event()
        self.stop_nemesis = threading.Event()
        self.stop_background = threading.Event()
        self.threads: list[threading.Thread] = []
        self.names_by_sha: dict[str, str] = {}
        self.sha_by_name: dict[str, str] = {}

    def thread(self, name: str, target: Any) -> threading.Thread:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self.threads.append(t)
        return t

    def now(self) -> float:
        return self.history.now()

    # --- phases -----------------------------------------------------------------------------------

    def setup(self) -> ServiceFlipper:
        self.result.leftovers_before += self.lab.up().leftovers
        cfg = self.cfg
        self.history.record({"kind": "meta", "wall_t0": self.history.wall_t0, "seed": self.result.seed,
                             "managers": cfg.managers, "workers": cfg.workers, "duration": cfg.duration,
                             "rate": cfg.rate, "command": cfg.command, "timings": vars(cfg.timings),
                             "leftovers_before": self.result.leftovers_before})
        self.swarm = Swarm(self.lab, cfg.managers, cfg.workers, self.out, cfg.timings, cfg.log_level)
        self.swarm.start()
        for name in [*POOL, STATIC[0]]:
            data = f"{name}:{self.result.seed}:{self.rng.getrandbits(64):016x}\n".encode()
            start = self.now()
            sid = self.swarm.create_secret(name, data)
            record_op(self.history, Op(-1, "create", name, start, self.now(), "ok", sid, self.swarm.members[0].name))
            self.names_by_sha[sha(data)] = name
            self.sha_by_name[name] = sha(data)
            self.history.record({"kind": "secret", "name": name, "sha": sha(data)})
        start = self.now()
        version = self.swarm.create_service({TARGET: POOL[0], STATIC[1]: STATIC[0]})
        for target, name in ((TARGET, POOL[0]), (STATIC[1], STATIC[0])):
            record_op(self.history, Op(-1, "svc-update", name, start, self.now(), "ok",
                                       {"target": target, "cond": 0, "version": version},
                                       self.swarm.members[0].name))
        self.poller = Poller(self.swarm, self.history, self.stop_background)
        self.converge({TARGET: POOL[0], STATIC[1]: STATIC[0]}, 30.0, "the first delivery")
        return ServiceFlipper(POOL, version, POOL[0])

    def expected(self, bound: dict[str, str]) -> dict[str, Expected]:
        return {t: Expected(self.sha_by_name.get(n, "?"), *FILE_META) for t, n in bound.items()}

    def converge(self, bound: dict[str, str], timeout: float, what: str) -> dict[str, Snapshot]:
        """Poll the workers until they hold exactly ``bound``; the last snapshots either way."""
        deadline = time.monotonic() + timeout
        while True:
            snaps = self.poller.poll()
            if not checker.check_worker_final(snaps, self.expected(bound)):
                return snaps
            if time.monotonic() > deadline:
                self.history.record({"kind": "note", "t": self.now(), "text": f"workers did not converge for {what}"})
                return snaps
            time.sleep(0.1)

    def workload(self, flipper: ServiceFlipper) -> None:
        cfg = self.cfg
        self.monitor = LeaderMonitor(self.swarm, self.history, self.stop_background)
        self.monitor.check()
        schedule = cfg.schedule if cfg.schedule is not None else random_schedule(
            cfg.faults, max(0.0, cfg.duration - 1.0), self.rng)
        self.history.record({"kind": "schedule", "faults": [vars(s) for s in schedule]})
        self.nemesis = Nemesis(self.lab, self.swarm, self.history, self.monitor, schedule, self.rng,
                               self.stop_nemesis)
        self.thread("leader-monitor", self.monitor.run)
        self.thread("poller", self.poller.run)
        t_start = self.now()
        clients = [ClientProcess(p, self.swarm, self.history, cfg.rate / cfg.clients,
                                 self.result.seed * 1000 + p, self.stop_clients, flipper if p == 0 else None)
                   for p in range(cfg.clients)]
        client_threads = [self.thread(f"client-{c.process}", c.run) for c in clients]
        nemesis_thread = self.thread("nemesis", lambda: self.nemesis.run(t_start))
        self.stop_nemesis.wait(cfg.duration)
        self.stop_clients.set()
        self.stop_nemesis.set()
        nemesis_thread.join(60)
        for t in client_threads:
            t.join(DEFAULT_RETRY.budget + ATTEMPT_TIMEOUT + 5)
        self.nemesis.heal_all()
        if self.nemesis.error is not None:
            raise RuntimeError(f"nemesis failed: {self.nemesis.error!r}") from self.nemesis.error

    def final_reads(self) -> dict[str, dict[str, Any]]:
        """Every manager's secrets and service, once they all answer and agree (or the timeout passes)."""
        time.sleep(2 * (self.cfg.timings.election_max or 1.0))
        deadline = time.monotonic() + QUIESCE_TIMEOUT
        reads: dict[str, dict[str, Any]] = {}
        channels = {m.name: channel(m) for m in self.swarm.managers}
        try:
            while True:
                for m in self.swarm.managers:
                    stub = channels[m.name].control
                    try:
                        secrets = stub.ListSecrets(control_pb2.ListSecretsRequest(), timeout=5).secrets
                        svc = stub.GetService(control_pb2.GetServiceRequest(service_id=SERVICE), timeout=5).service
                    except LocalError:
                        continue
                    reads[m.name] = {"t": self.now(), "secrets": sorted((s.spec.name, s.id) for s in secrets),
                                     "version": svc.version.index,
                                     "bound": {r.file.name: r.secret_name for r in svc.spec.secrets}}
                views = {(tuple(r["secrets"]), tuple(sorted(r["bound"].items()))) for r in reads.values()}
                if len(reads) == len(channels) and len(views) == 1 or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
        finally:
            for ch in channels.values():
                ch.close()
        for node, r in sorted(reads.items()):
            self.history.record({"kind": "final", "node": node, **r})
        return reads

    def check(self, reads: dict[str, dict[str, Any]], final_snaps: dict[str, Snapshot]) -> Anomalies:
        ops = self.history.ops()
        faults = self.history.of("fault")
        leaders = self.history.of("leader")
        finals = {node: [tuple(e) for e in r["secrets"]] for node, r in reads.items()}
        found: list[Anomalies] = [checker.check_history(ops, finals)]
        missing = sorted({m.name for m in self.swarm.managers} - set(reads))
        if missing:
            found.append({"final-read-failed": [{"node": n, "timeout": QUIESCE_TIMEOUT} for n in missing]})
        services = {node: r["bound"] for node, r in reads.items()}
        if len({tuple(sorted(b.items())) for b in services.values()}) > 1:
            found.append({"managers-disagree": [{"service": services}]})
        cuts = [Cut(frozenset(f["cut"]), f["start"], f["heal_start"]) for f in faults if f.get("cut")]
        found.append(checker.check_minority(ops, cuts))
        disruptions = [(f["invoked"], f["end"]) for f in faults]
        disruptions += [(ld["t"] - 1.0, ld["t"]) for ld in leaders[1:]]
        windows = checker.binding_windows(ops)
        meta = {TARGET: FILE_META, STATIC[1]: FILE_META}
        found.append(checker.check_workers(self.history.snapshots(), windows, self.names_by_sha, meta,
                                           disruptions, GRACE, RECONNECT))
        bound: dict[str, str] = next(iter(services.values()), {})
        found.append(checker.check_worker_final(final_snaps, self.expected(bound)))
        snaps = self.history.snapshots()
        for f in faults:
            if f["fault"] == "worker-partition":
                found.append(checker.check_untouched(snaps, f["nodes"][0], f["start"] + CUT_SETTLE, f["heal_start"]))
        return checker.merge(*found)

    # --- all of it --------------------------------------------------------------------------------

    def execute(self) -> None:
        marks = {"start": time.monotonic()}
        flipper = self.setup()
        marks["formed"] = time.monotonic()
        self.workload(flipper)
        marks["workload"] = time.monotonic()
        reads = self.final_reads()
        bound = next(iter(reads.values()), {}).get("bound", {})
        final_snaps = self.converge(bound, self.cfg.converge_timeout, "the final check")
        marks["quiesced"] = time.monotonic()
        self.stop_background.set()
        self.result.anomalies = self.check(reads, final_snaps)
        marks["checked"] = time.monotonic()
        names = ["formed", "workload", "quiesced", "checked"]
        prev = "start"
        for n in names:
            self.result.timings[n] = round(marks[n] - marks[prev], 2)
            prev = n

    def shutdown(self) -> None:
        """The nemesis first (so nothing is spawned into a lab being torn down), then the lab, whose
        dead daemons make every pending client call fail at once, then the other threads."""
        self.stop_clients.set()
        self.stop_nemesis.set()
        self.stop_background.set()
        for t in self.threads:
            if t.name == "nemesis":
                t.join(60)
        self.lab.down()
        deadline = time.monotonic() + 10
        for t in self.threads:
            t.join(max(0.1, deadline - time.monotonic()))
        self.history.close()


OUR_FILES = ("history.jsonl", "report.md", "timeline.png", "logs", "nodes")


def prepare_out(out: Path) -> None:
    """A fresh output dir: an earlier run's in it is replaced (its data dirs would rejoin the old
    swarm); a dir with anything else in it is refused."""
    out.mkdir(parents=True, exist_ok=True)
    others = sorted(p.name for p in out.iterdir() if p.name not in OUR_FILES)
    if others:
        raise ValueError(f"{out} holds files that are not a chaos run's ({', '.join(others[:5])}); "
                         "choose another --out")
    for name in OUR_FILES:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def run(cfg: RunConfig) -> RunResult:
    """Run, check, report; never leaves the lab behind. ``RunResult.ok`` is the verdict."""
    seed = cfg.seed if cfg.seed is not None else random.SystemRandom().randrange(1 << 31)
    earlier = teardown(cfg.prefix)  # before the output dir: a crashed run's daemons may still write there
    prepare_out(cfg.out)
    result = RunResult(config=cfg, seed=seed, out=cfg.out, leftovers_before=earlier)
    r = _Run(cfg, result)
    try:
        r.execute()
    except Exception as e:
        result.error = f"{type(e).__name__}: {e}"
    finally:
        r.shutdown()
        result.leftovers_after = leftovers(cfg.prefix)
        result.ops = r.history.ops()
        result.faults = r.history.of("fault")
        result.leaders = r.history.of("leader")
    report.write(result, r.history)
    return result
