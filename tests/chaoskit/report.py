"""report.md and timeline.png of a run (history.jsonl is written as the run goes)."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from typing import TYPE_CHECKING

from tests.chaoskit.checker import Op

if TYPE_CHECKING:
    from tests.chaoskit.runner import RunResult
    from tests.chaoskit.workload import History

FAULT_COLORS = {"kill": "#d62728", "pause": "#9467bd", "partition": "#1f77b4", "partition-leader": "#17becf",
                "loss": "#bcbd22", "delay": "#ff7f0e", "loss+delay": "#e6a000", "worker-partition": "#8c564b"}
TYPE_COLORS = {"ok": "#2ca02c", "fail": "#d62728", "info": "#ff9f1c"}
EXAMPLES = 5

INTRO = ("Every check is a necessary condition of linearizability or of the delivery contract, so each anomaly "
         "is a real bug (sound), though not every bug is caught (incomplete). An op takes effect somewhere "
         "between its start and end; an `info` op (outcome unknown) anywhere from its start on.")
CHECKS = [
    ("lost", "an acknowledged create is missing from a manager's final read and no remove of its name could "
             "explain it"),
    ("resurrected", "an acknowledged remove started after an acknowledged create ended, yet the created id is "
                    "in the final read"),
    ("double-create", "two acknowledged creates of one name with no remove that could fall between them"),
    ("duplicate-name, duplicate-id, id-changed-name", "a read or the final state holds a name or an id twice; "
                                                      "two creates got one id; an id shows under another name"),
    ("phantom, read-from-future", "a listed id that no create of that name could have made; or whose create "
                                  "started after the list ended"),
    ("spurious-conflict", "\"already exists\" although no other create of the name could precede it (a retry "
                          "with the same request_id must never conflict with itself)"),
    ("stale-not-found", "\"not found\" for a name created before, with no remove that could intervene"),
    ("stale-list", "a list (reads pass a read barrier, so they claim linearizability) misses an id created "
                   "before it began, or shows one removed before it began"),
    ("managers-disagree, final-read-failed", "managers' final secrets or service differ; a manager never "
                                             "answered after the heal"),
    ("minority-ack", "a manager cut off from the majority acknowledged an op that started after the cut and "
                     "ended before the heal"),
    ("worker-outside-window", "a worker held a secret outside every window in which it was bound: from the "
                              "invocation of the update binding it to the end of the acknowledged update that "
                              "must replace it, plus the delivery deadline"),
    ("worker-missing-at-end, worker-extra-at-end, worker-wrong-bytes, worker-wrong-mode, worker-not-tmpfs",
     "the final tmpfs differs from the final binding: every bound secret present with the right bytes, owner "
     "0:0 and mode 0444, on tmpfs, and nothing else"),
    ("worker-changed-while-cut", "a worker cut off from every manager changed its files meanwhile"),
]


def _fmt(t: float) -> str:
    return f"{t:7.2f}"


def _ops_table(ops: list[Op]) -> list[str]:
    fs = sorted({o.f for o in ops})
    counts = Counter((o.f, o.type) for o in ops)
    lines = ["| op | ok | fail | info | p50 ok latency (s) | p99 ok latency (s) |", "|---|---|---|---|---|---|"]
    for f in fs:
        lat = sorted(o.end - o.start for o in ops if o.f == f and o.type == "ok")
        p50 = f"{statistics.median(lat):.3f}" if lat else "-"
        p99 = f"{lat[min(len(lat) - 1, int(len(lat) * 0.99))]:.3f}" if lat else "-"
        lines.append(f"| {f} | {counts[(f, 'ok')]} | {counts[(f, 'fail')]} | {counts[(f, 'info')]} | {p50} | {p99} |")
    return lines


def markdown(result: RunResult) -> str:
    cfg = result.config
    t = cfg.timings
    ops = [o for o in result.ops if o.process >= 0]
    verdict = "PASS" if result.ok else "FAIL"
    n_anom = sum(len(v) for v in result.anomalies.values())
    lines = [f"# Chaos run: {verdict}", "",
             f"- command: `{cfg.command or 'tests.chaoskit.runner.run(...)'}`",
             f"- seed {result.seed}; {cfg.managers} managers, {cfg.workers} workers; workload {cfg.duration:g} s "
             f"at ~{cfg.rate:g} ops/s from {cfg.clients} clients",
             f"- lab raft timings (fast, so fault windows can be short): heartbeat {t.raft_heartbeat:g} s, election "
             f"timeout {t.election_min:g}-{t.election_max:g} s, dispatcher heartbeat {t.dispatcher_heartbeat:g} s "
             "(a worker is down after 3 missed)",
             "- faults: kill = SIGKILL of the daemon's process group, restarted after the window; pause = "
             "SIGSTOP/SIGCONT; partitions = nftables drop sets (the receiver drops); loss = nft numgen on "
             "output; delay = NFQUEUE on input plus the userspace delayer (this kernel has no netem)",
             f"- phases (s): {', '.join(f'{k} {v:g}' for k, v in result.timings.items()) or 'n/a'}",
             f"- anomalies: {n_anom}" + (f"; harness error: {result.error}" if result.error else ""), ""]
    lines += ["## Operations", "", *_ops_table(ops), ""]
    lines += ["## Faults", "", "| fault | nodes | detail | invoked | active | healed |", "|---|---|---|---|---|---|"]
    for f in result.faults:
        lines.append(f"| {f['fault']} | {', '.join(f['nodes'])} | {f.get('detail', '')} | {_fmt(f['invoked'])} | "
                     f"{_fmt(f['start'])}-{_fmt(f['heal_start'])} | {_fmt(f['end'])} |")
    lines += ["", "## Leader changes", ""]
    lines += [f"- {_fmt(ld['t'])} s: {', '.join(ld['leaders']) or 'none answering as leader'}" for ld in result.leaders]
    lines += ["", "## Anomalies", ""]
    if not result.anomalies:
        lines.append("None.")
    for kind, items in sorted(result.anomalies.items()):
        lines += [f"### {kind} ({len(items)})", "", "```json"]
        lines += [json.dumps(item, default=str) for item in items[:EXAMPLES]]
        lines += ["```", ""]
    lines += ["", "## Checks", "", INTRO, "", "| anomaly | meaning |", "|---|---|"]
    lines += [f"| {kind} | {meaning} |" for kind, meaning in CHECKS]
    lines += ["", "## Cleanup", ""]
    lines.append(f"- leftovers of an earlier run cleaned at start: {', '.join(result.leftovers_before) or 'none'}")
    lines.append(f"- left after teardown: {', '.join(result.leftovers_after) or 'nothing'}")
    lines += ["", "Files: `history.jsonl` (every op, fault, leader change, tmpfs poll and final read), "
              "`timeline.png`, `logs/` (daemons, delayers), `nodes/` (data dirs).", ""]
    return "\n".join(lines)


def timeline(result: RunResult, history: History, path: str) -> None:
    """Faults as bands, op latency and availability over time, each worker's secret at "cur", leader changes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ops = [o for o in result.ops if o.process >= 0]
    fig, axes = plt.subplots(3, 1, figsize=(13, 8.5), sharex=True, gridspec_kw={"height_ratios": [3, 2, 1.2]})
    lat_ax, avail_ax, work_ax = axes
    for kind, color in TYPE_COLORS.items():
        sel = [o for o in ops if o.type == kind]
        lat_ax.scatter([o.start for o in sel], [max(o.end - o.start, 1e-3) for o in sel], s=7, c=color,
                       label=f"{kind} ({len(sel)})", alpha=0.7, linewidths=0)
    if ops:
        lat_ax.set_yscale("log")
    lat_ax.set_ylabel("op latency (s)")
    end = max([o.end for o in ops] + [1.0])
    bins = int(end) + 1
    total, good = [0] * bins, [0] * bins
    for o in ops:
        b = min(bins - 1, int(o.start))
        total[b] += 1
        good[b] += o.type == "ok"
    xs = list(range(bins))
    avail_ax.step(xs, [g / n if n else float("nan") for g, n in zip(good, total, strict=True)], where="post",
                  color="#2ca02c", label="availability (ok / started)")
    avail_ax.set_ylim(-0.05, 1.05)
    avail_ax.set_ylabel("availability")
    thr = avail_ax.twinx()
    thr.step(xs, good, where="post", color="#555555", alpha=0.6, label="ok ops/s")
    thr.set_ylabel("ok ops / s")
    secrets = sorted(r["name"] for r in history.of("secret"))
    snaps = history.snapshots()
    workers = sorted({s.worker for s in snaps})
    names_by_sha = {r["sha"]: r["name"] for r in history.of("secret")}
    palette = plt.get_cmap("tab10")
    for wi, w in enumerate(workers):
        for si, name in enumerate(secrets):
            ts = [s.t for s in snaps if s.worker == w
                  for f in s.files if f.target == "cur" and names_by_sha.get(f.sha) == name]
            work_ax.scatter(ts, [wi] * len(ts), s=4, color=palette(si % 10), label=name if wi == 0 else None)
    work_ax.set_yticks(range(len(workers)), workers)
    work_ax.set_ylabel('worker file "cur"')
    work_ax.set_xlabel("seconds since the run began")
    seen: set[str] = set()
    for f in result.faults:
        for ax in axes:
            ax.axvspan(f["start"], f["heal_start"], color=FAULT_COLORS.get(f["fault"], "#999999"), alpha=0.18,
                       label=f["fault"] if ax is lat_ax and f["fault"] not in seen else None)
        seen.add(f["fault"])
    for ld in result.leaders:
        for ax in axes:
            ax.axvline(ld["t"], color="black", linestyle=":", linewidth=0.8)
        lat_ax.annotate(",".join(ld["leaders"]) or "-", (ld["t"], 1.0), xycoords=("data", "axes fraction"),
                        fontsize=7, rotation=90, va="top", ha="right")
    for ax, where in ((lat_ax, "upper left"), (work_ax, "upper left"), (avail_ax, "lower left")):
        if ax.get_legend_handles_labels()[1]:
            ax.legend(loc=where, fontsize=7, ncol=6)
    verdict = "PASS" if result.ok else "FAIL"
    lat_ax.set_title(f"swarmsecrets chaos run, seed {result.seed}: {verdict} "
                     f"({sum(len(v) for v in result.anomalies.values())} anomalies); dotted lines: leader changes")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(result: RunResult, history: History) -> None:
    (result.out / "report.md").write_text(markdown(result), encoding="utf-8")
    timeline(result, history, str(result.out / "timeline.png"))
