"""The suite's results as plain text: one run's table, the summary over several runs."""

from __future__ import annotations

import sys
import time

from ._common import Result
from ._loop import LAG_INTERVAL
from .suite import RATED


def format_table(results: Result) -> str:
    """Render results as a plain-text report."""
    m = results["machine"]
    store = m["store"] if m.get("store", "SQLite") != "SQLite" else f"SQLite {m['sqlite']}"
    cpus = f"{m['cpus']} CPUs"
    if m.get("cpus_usable") not in (None, m["cpus"]):
        cpus += f" ({m['cpus_usable']} usable by this process)"
    lines = [
        f"actorsource bench: {cpus}, Python {m['python']}, {store}, {m['durability']}",
        f"garbage collector: {m['gc']}; switch interval: {m['switch_interval']}",
        "",
        f"{'workload':<22}{'commands/s':>12}{'events/s':>12}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'p99.9 ms':>10}",
    ]
    for name in RATED:
        r = results["workloads"].get(name)
        if r:
            lines.append(
                f"{name:<22}{r['commands_per_s']:>12,.0f}{r.get('events_per_s', 0):>12,.0f}"
                f"{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['p999_ms']:>10.2f}"
            )
    base = results["baselines"]
    for key, label in (
        ("ceiling", "ceiling (raw batched)"),
        ("fsync_floor", "fsync floor (1/commit)"),
        ("raw_floor", "raw floor (in-thread)"),
        ("peer", "eventsourcing"),
        ("peer_cached", "eventsourcing+cache"),
    ):
        b = base.get(key)
        if b:
            rate = b.get("events_per_s", b.get("commands_per_s", 0.0))
            lines.append(f"{label:<22}{rate:>12,.0f}")
    loop_lines = [_loop_line(name, results["workloads"].get(name)) for name in RATED]
    if any(loop_lines):
        lines.append("")
        lines.extend(line for line in loop_lines if line)
    if "baselines_skipped" in results:
        lines.append(f"baselines: {results['baselines_skipped']}")
    if "peer_skipped" in results:
        lines.append(f"baselines: {results['peer_skipped']}")
    seq = results["workloads"].get("W1-seq")
    if seq and seq.get("first_asks"):
        lines.append("")
        lines.append(_sequential_asks_line(seq, base.get("fsync_floor"), base.get("raw_floor")))
    w3 = results["workloads"].get("W3")
    if w3:
        lines.append("")
        for label in ("no_snapshot", "snapshot_every_100"):
            r = w3[label]
            rate = r["replayed_events_per_s"]
            rate_text = f"{rate:,.0f} events/s replayed" if rate else "nothing replayed"
            lines.append(
                f"W3 {label:<19} {r['ms_per_activation']:8.2f} ms per activation of "
                f"{w3['events']:,} events ({rate_text})"
            )
    w4 = results["workloads"].get("W4")
    if w4:
        lines.append("")
        lines.append(
            f"W4 {w4['bytes_per_idle_actor']:,.0f} bytes per live idle actor "
            f"({w4['actors']:,} actors); {w4['bytes_retained_after_passivation']:,.0f} bytes "
            f"retained after passivation ({w4['retained_fraction_of_live']:.1%} of live); "
            f"{w4['activations_plus_passivations_per_s']:,.0f} activations+passivations/s"
        )
    w5 = results["workloads"].get("W5")
    if w5:
        lines.append(
            f"W5 {w5['activations']:,} activations, {w5['passivations']:,} passivations "
            f"with max_active={w5['max_active']:,} over {w5['aggregates']:,} aggregates"
        )
    if results["ratios"]:
        lines.append("")
        for key, value in results["ratios"].items():
            text = f"{value:.2f}x" if key.endswith("peer_best") else f"{value:.0%}"
            lines.append(f"{key:<32}{text:>8}")
    return "\n".join(lines)


def format_repeated(repeated: Result) -> str:
    """Render :func:`run_repeated`'s results: the summary over the runs, each ratio as a
    median with its range."""
    runs = repeated["runs"]
    first_lines = format_table(runs[0]).splitlines()[:2]  # the machine and its settings
    lines = [
        *first_lines,
        "",
        f"{f'over {len(runs)} runs':<32}{'median':>12}{'min':>12}{'max':>12}",
    ]
    for name, spread in repeated["over_runs"].items():
        if name.endswith("commands/s"):
            cells = [f"{spread[k]:>12,.0f}" for k in ("median", "min", "max")]
        elif name.endswith("peer_best"):
            cells = [f"{spread[k]:>11.2f}x" for k in ("median", "min", "max")]
        elif name.endswith(("us/command", " ms")):
            cells = [f"{spread[k]:>12.2f}" for k in ("median", "min", "max")]
        else:
            cells = [f"{spread[k]:>12.0%}" for k in ("median", "min", "max")]
        lines.append(f"{name:<32}{''.join(cells)}")
    if "peer_skipped" in runs[0]:
        lines.append(f"baselines: {runs[0]['peer_skipped']}")
    return "\n".join(lines)


def _loop_line(name: str, workload: Result | None) -> str | None:
    """What a workload cost the event loop, where it was measured."""
    if not workload or "loop_cpu_us_per_command" not in workload:
        return None
    return (
        f"{name} on the loop: {workload['loop_cpu_us_per_command']:.1f} us CPU per command; "
        f"lag p99 {workload['loop_lag_p99_ms']:.2f} ms, max {workload['loop_lag_max_ms']:.2f} ms "
        f"(a timer due every {LAG_INTERVAL * 1000:g} ms)"
    )


def _sequential_asks_line(seq: Result, floor: Result | None, raw: Result | None = None) -> str:
    """W1-seq's first asks (a load, then a commit) apart from the later ones (a commit)."""
    first, later = seq["first_asks"], seq.get("later_asks")
    text = (
        f"W1-seq {first['count']:,} first asks (load, then commit): mean "
        f"{first['mean_ms']:.2f} ms, p50 {first['p50_ms']:.2f} ms"
    )
    if later:
        text += (
            f"; {later['count']:,} later asks: mean {later['mean_ms']:.2f} ms, "
            f"p50 {later['p50_ms']:.2f} ms"
        )
    if floor:
        text += f"; the fsync floor: {1000 / floor['events_per_s']:.2f} ms a row"
    if raw:
        text += f"; the raw floor: {1000 / raw['events_per_s']:.2f} ms a row"
    return text


def stderr_progress(message: str) -> None:
    """Report progress on stderr (the numbers go to stdout)."""
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()
