"""The benchmark report, from run.py's raw measurements:

    python benchmarks/report.py docs/benchmarks.json   ->  docs/benchmarks.md, docs/benchmarks.png

Every figure is a median over the run's rounds; ratios are of medians
measured in that one run. The targets are issue 12's.
"""

import json
import math
import os
import statistics
import sys

# Ocular's own micro workloads (benchmarks/workloads.py); the rest come from pyperformance.
OWN_WORKLOADS = ("mixed", "stdlib", "objects", "loops", "calls")

LABELS = {
    "untraced": "untraced",
    "ocular-adaptive-500": "Ocular adaptive 500", "ocular-adaptive-500-pftrace": "adaptive 500 + .pftrace",
    "ocular-adaptive-0": "Ocular adaptive 0", "ocular-adaptive-0-pftrace": "adaptive 0 + .pftrace",
    "ocular-precise-500": "Ocular precise 500", "ocular-precise-500-pftrace": "precise 500 + .pftrace",
    "ocular-precise-0": "Ocular precise 0", "ocular-precise-0-pftrace": "precise 0 + .pftrace",
    "floor-adaptive": "floor (adaptive events)", "timed-floor-adaptive": "timed floor (adaptive)",
    "floor-precise": "floor (precise events)", "timed-floor-precise": "timed floor (precise)",
    "cprofile": "cProfile", "viztracer": "VizTracer", "yappi": "yappi (wall)", "pyinstrument": "pyinstrument",
    "line_profiler": "line_profiler (hot functions)",
}
SHORT = {
    "ocular-adaptive-500": "A500", "ocular-adaptive-500-pftrace": "A500+T", "ocular-adaptive-0": "A0",
    "ocular-adaptive-0-pftrace": "A0+T", "ocular-precise-500": "P500", "ocular-precise-500-pftrace": "P500+T",
    "ocular-precise-0": "P0", "ocular-precise-0-pftrace": "P0+T", "floor-adaptive": "floor A",
    "timed-floor-adaptive": "timed floor A", "floor-precise": "floor P", "timed-floor-precise": "timed floor P",
    "cprofile": "cProfile", "viztracer": "VizTracer", "yappi": "yappi", "pyinstrument": "pyinstrument",
    "line_profiler": "line_profiler", "untraced": "untraced",
}
OCULAR_COLUMNS = ["ocular-adaptive-500", "ocular-adaptive-500-pftrace", "ocular-adaptive-0",
                  "ocular-adaptive-0-pftrace", "ocular-precise-500", "ocular-precise-500-pftrace",
                  "ocular-precise-0", "ocular-precise-0-pftrace", "floor-adaptive", "timed-floor-adaptive",
                  "floor-precise", "timed-floor-precise"]
PEER_COLUMNS = ["ocular-adaptive-0", "ocular-precise-0", "cprofile", "viztracer", "yappi", "pyinstrument",
                "line_profiler"]
PLOTTED = ["ocular-adaptive-500", "ocular-adaptive-0", "ocular-adaptive-0-pftrace", "ocular-precise-500",
           "ocular-precise-0", "floor-adaptive", "floor-precise", "cprofile", "viztracer", "yappi",
           "pyinstrument", "line_profiler"]
SPECIAL = ("many_codes", "jinja2_tests")


class Results:
    """Medians of the raw measurements, by (workload, config)."""

    def __init__(self, raw):
        self.raw = raw
        self.samples = {}
        for m in raw["measurements"]:
            self.samples.setdefault((m["workload"], m["config"]), []).append(m)
        self.workloads = [w for w in raw["plan"] if w not in SPECIAL]

    def median(self, workload, config, field="seconds"):
        values = [m[field] for m in self.samples.get((workload, config), ()) if m.get(field) is not None]
        return statistics.median(values) if values else None

    def rounds(self, workload, config):
        return len(self.samples.get((workload, config), ()))

    def ratio(self, workload, config, base="untraced"):
        traced, untraced = self.median(workload, config), self.median(workload, base)
        return traced / untraced if traced is not None and untraced else None

    def own_multiple(self, workload, config, floor):
        """Ocular's own overhead as a multiple of the floor's: (traced - untraced) / (floor - untraced)."""
        base = self.median(workload, "untraced")
        traced, floor_s = self.median(workload, config), self.median(workload, floor)
        if None in (base, traced, floor_s) or floor_s <= base:
            return None
        return (traced - base) / (floor_s - base)

    def round_ratio(self, workload, config, round_):
        """traced / untraced within one round (None if either is missing)."""
        pick = lambda c: next((m["seconds"] for m in self.samples.get((workload, c), ()) if m["round"] == round_), None)
        traced, untraced = pick(config), pick("untraced")
        return traced / untraced if traced is not None and untraced else None

    def round_geomeans(self, config):
        """The geometric mean over the workloads, computed round by round:
        how far one round's summary figure moves from another's."""
        means = []
        for round_ in range(rounds_done(self.raw)):
            values = [self.round_ratio(w, config, round_) for w in self.workloads]
            if values and None not in values:
                means.append(geomean(values))
        return means

    def column(self, config, function=None):
        function = function or (lambda w: self.ratio(w, config))
        return [v for v in (function(w) for w in self.workloads) if v is not None]


def command_flag(meta):
    size = meta.get("size", "quick" if meta.get("quick") else "full")
    return {"quick": " --quick", "full": " --full"}.get(size, "")


def rounds_done(raw):
    return 1 + max((m["round"] for m in raw["measurements"]), default=-1)


def geomean(values):
    values = [v for v in values if v is not None and v > 0]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def fmt(value, digits=2, suffix="x"):
    return "–" if value is None else f"{value:.{digits}f}{suffix}"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(measured, target, worse_is_higher=True):
    if measured is None:
        return "not measured"
    if (measured <= target) if worse_is_higher else (measured >= target):
        return "met"
    return f"**missed** by {measured / target - 1:.0%} ({measured:.3g} against {target:.3g})"


def worst(results, function):
    pairs = [(function(w), w) for w in results.workloads]
    pairs = [p for p in pairs if p[0] is not None]
    return max(pairs) if pairs else (None, None)


def targets(r):
    rows = []
    for mode in ("adaptive", "precise"):
        config = f"ocular-{mode}-0"
        value, where = worst(r, lambda w: r.own_multiple(w, config, f"floor-{mode}"))
        over = sum(1 for w in r.workloads if (r.own_multiple(w, config, f"floor-{mode}") or 0) > 1.3)
        rows.append((f"{mode}, threshold 0: Ocular's own overhead at most 1.3x the floor's, every workload",
                     f"worst {fmt(value)} ({where}); geometric mean "
                     f"{fmt(geomean(r.column(config, lambda w: r.own_multiple(w, config, f'floor-{mode}'))))}; "
                     f"over 1.3x on {over} of {len(r.workloads)}",
                     verdict(value, 1.3)))
    a0 = geomean(r.column("ocular-adaptive-0"))
    rows.append(("adaptive, threshold 0: at most 1.8x (geometric mean)", fmt(a0), verdict(a0, 1.8)))
    for peer in ("cprofile", "viztracer"):
        value, where = worst(r, lambda w: r.ratio(w, "ocular-adaptive-0", peer))
        slower = [w for w in r.workloads if (r.ratio(w, "ocular-adaptive-0", peer) or 0) >= 1]
        rows.append((f"adaptive, threshold 0: below {LABELS[peer]} on every workload",
                     f"Ocular / {LABELS[peer]}: worst {fmt(value)} ({where}); not below on {len(slower)} of "
                     f"{len(r.workloads)}" + (f" ({', '.join(slower)})" if slower else ""),
                     "met" if value is not None and value < 1 else verdict(value, 1.0)))
    p0 = geomean(r.column("ocular-precise-0"))
    rows.append(("precise, threshold 0: at most 6x (geometric mean)", fmt(p0), verdict(p0, 6)))
    for mode, target in (("adaptive", 1.03), ("precise", 1.10)):
        config = f"ocular-{mode}-500"
        value = geomean(r.column(config))
        high, where = worst(r, lambda w: r.ratio(w, config))
        rows.append((f"{mode}, threshold 500: at most {target:.2f}x (geometric mean)",
                     f"{fmt(value, 3)} (worst {fmt(high, 3)}, {where})", verdict(value, target)))
    for mode in ("adaptive", "precise"):
        traced = f"ocular-{mode}-0"
        value = geomean(r.column(traced, lambda w: r.ratio(w, traced + "-pftrace", traced)))
        high, where = worst(r, lambda w: r.ratio(w, traced + "-pftrace", traced))
        rows.append((f"{mode}, threshold 0: a .pftrace within 1.1x of no trace (geometric mean)",
                     f"{fmt(value, 3)} (worst {fmt(high, 3)}, {where})", verdict(value, 1.1)))
    shares = [(r.median(w, c, "stop_seconds") / r.median(w, c), w, c) for w in r.workloads
              for c in OCULAR_COLUMNS if c.startswith("ocular-") and r.median(w, c, "stop_seconds") is not None]
    if shares:
        share, where, config = max(shares)
        rows.append(("stop_tracing() at most 10 % of the traced run (the workloads)",
                     f"worst {share:.1%} ({where}, {SHORT[config]})", verdict(share, 0.10)))
    suite = [(c, r.median("jinja2_tests", c, "stop_seconds"), r.median("jinja2_tests", c))
             for c in r.raw["plan"].get("jinja2_tests", ()) if c.startswith("ocular-")]
    suite = [(c, stop, run) for c, stop, run in suite if stop is not None]
    if suite:
        share, config = max((stop / run, c) for c, stop, run in suite)
        rows.append(("stop_tracing() at most 10 % of the traced run (jinja2's tests)",
                     f"worst {share:.0%} ({SHORT[config]}); "
                     + ", ".join(f"{SHORT[c]} {stop:.2f} s after {run:.2f} s" for c, stop, run in suite),
                     verdict(share, 0.10)))
        stop, config = max((stop, c) for c, stop, _ in suite)
        functions = r.median("jinja2_tests", config, "functions")
        rows.append(("stop_tracing() under 1 s on jinja2's tests",
                     f"worst {stop:.2f} s ({SHORT[config]}, {functions:,.0f} functions seen)", verdict(stop, 1.0)))
    codes = [(r.median("many_codes", c, "stop_seconds"), c) for c in r.raw["plan"].get("many_codes", ())
             if c.startswith("ocular-")]
    codes = [p for p in codes if p[0] is not None]
    if codes:
        stop, config = max(codes)
        rows.append((f"stop_tracing() under 1 s after touching {r.raw['units']['many_codes']:,} code objects",
                     f"worst {stop:.2f} s ({SHORT[config]}); "
                     + ", ".join(f"{SHORT[c]} {s:.2f} s" for s, c in sorted(codes, key=lambda p: p[1])),
                     verdict(stop, 1.0)))
    return table(("target (issue 12)", "measured", ""), rows)


def ratio_table(r, columns):
    rows = []
    for w in r.workloads:
        # The untraced runs' spread over the rounds: how much the machine's
        # phases moved this workload's figures.
        runs = [m["seconds"] for m in r.samples.get((w, "untraced"), ())]
        spread = f"{min(runs):.2f}–{max(runs):.2f} s" if runs else "–"
        rows.append([w, fmt(r.median(w, "untraced"), 3, " s"), spread] + [fmt(r.ratio(w, c)) for c in columns])
    rows.append(["**geometric mean**", "", ""] + [f"**{fmt(geomean(r.column(c)))}**" for c in columns])
    return table(["workload", "untraced", "untraced range"] + [SHORT[c] for c in columns], rows)


def per_event(r, mode):
    config, floor, timed = f"ocular-{mode}-0", f"floor-{mode}", f"timed-floor-{mode}"
    rows, weighted = [], {config: [0, 0], floor: [0, 0], timed: [0, 0]}
    mismatched = []
    for w in r.workloads:
        base, events = r.median(w, "untraced"), r.median(w, config, "events")
        if base is None or not events:
            continue
        cells = [w, f"{events:,.0f}"]
        for c in (config, floor, timed):
            seconds = r.median(w, c)
            ns = None if seconds is None else (seconds - base) / events * 1e9
            if ns is not None:
                weighted[c][0] += ns * events
                weighted[c][1] += events
            cells.append(fmt(ns, 1, ""))
        cells += [fmt(r.own_multiple(w, config, floor)), fmt(r.own_multiple(w, config, timed))]
        timed_events = r.median(w, timed, "events")
        if timed_events and abs(timed_events / events - 1) > 0.01:
            mismatched.append(f"{w} ({timed_events:,.0f} against {events:,.0f})")
        rows.append(cells)
    rows.append(["**event-weighted mean**", ""]
                + [fmt(t / n if n else None, 1, "") for t, n in weighted.values()]
                + [f"**{fmt(geomean(r.column(config, lambda w: r.own_multiple(w, config, floor))))}**",
                   f"**{fmt(geomean(r.column(config, lambda w: r.own_multiple(w, config, timed))))}** (geometric means)"])
    text = table(("workload", "events", "Ocular ns/event", "floor ns/event", "timed floor ns/event",
                  "Ocular's overhead / floor's", "/ timed floor's"), rows)
    if mismatched:
        text += ("\n\nThe timed floor counted a different number of events than Ocular delivered on: "
                 + "; ".join(mismatched) + ".")
    return text


def trace_table(r):
    rows = []
    for w in r.workloads:
        cells = [w]
        for c in ("ocular-adaptive-500", "ocular-adaptive-0", "ocular-precise-500", "ocular-precise-0"):
            cells.append(fmt(r.ratio(w, c + "-pftrace", c), 3))
        size, events = r.median(w, "ocular-adaptive-0-pftrace", "trace_bytes"), r.median(w, "ocular-adaptive-0-pftrace", "events")
        records = r.median(w, "ocular-adaptive-0-pftrace", "trace_events")
        blocks = r.median(w, "ocular-adaptive-0-pftrace", "trace_block_slices")
        dropped = max((m.get("dropped", 0) for m in r.samples.get((w, "ocular-adaptive-0-pftrace"), ())), default=0)
        cells += [fmt(size / 1e6 if size else None, 1, " MB"), fmt(size / events if size and events else None, 1, ""),
                  fmt(size / records if size and records else None, 1, ""),
                  fmt(size / blocks if size and blocks else None, 1, ""), f"{dropped:,}"]
        rows.append(cells)
    rows.append(["**geometric mean**"] + [
        f"**{fmt(geomean(r.column(c, lambda w, c=c: r.ratio(w, c + '-pftrace', c))), 3)}**"
        for c in ("ocular-adaptive-500", "ocular-adaptive-0", "ocular-precise-500", "ocular-precise-0")]
        + [""] * 5)
    return table(("workload", "A500+T / A500", "A0+T / A0", "P500+T / P500", "P0+T / P0", "A0 trace size",
                  "bytes / delivered event", "bytes / trace record", "bytes / block slice", "records dropped"), rows)


def stop_tables(r):
    configs = ["ocular-adaptive-500", "ocular-adaptive-0", "ocular-precise-500", "ocular-precise-0"]
    rows = []
    for w in r.workloads:
        cells = [w]
        for c in configs:
            stop, run = r.median(w, c, "stop_seconds"), r.median(w, c)
            cells.append("–" if stop is None else f"{stop:.3f} s ({stop / run:.1%})")
        rows.append(cells)
    text = table(["workload"] + [f"{SHORT[c]}: stop (share of run)" for c in configs], rows)
    for special, title in (("many_codes", f"`many_codes` ({r.raw['units'].get('many_codes', 0):,} small exec'd "
                                          "functions, each called once)"),
                           ("jinja2_tests", f"jinja2 {r.raw['versions'].get('jinja2', '')}'s tests "
                                            f"(`{r.raw['meta'].get('suite_selection', 'tests')}` from its sdist, "
                                            "pytest.main in-process)")):
        if special not in r.raw["plan"]:
            continue
        rows = []
        base = r.median(special, "untraced")
        for c in r.raw["plan"][special]:
            run, stop = r.median(special, c), r.median(special, c, "stop_seconds")
            rows.append([LABELS[c], fmt(run, 3, " s"), fmt(r.ratio(special, c)) if c != "untraced" else "",
                         fmt(stop, 3, " s"), "" if stop is None else f"{stop / run:.0%}",
                         "" if stop is None else f"{(run + stop) / base:.2f}x",
                         "" if r.median(special, c, "functions") is None
                         else f"{r.median(special, c, 'functions'):,.0f}",
                         fmt(r.median(special, c, "rss_kb") / 1024, 0, " MB")])
        text += f"\n\n{title}:\n\n" + table(
            ("contender", "run", "run / untraced", "stop_tracing()", "stop / run", "(run + stop) / untraced",
             "functions in the Profile", "peak RSS"), rows)
    return text


def rss_table(r):
    columns = [c for c in r.raw["plan"][r.workloads[0]]] if r.workloads else []
    rows = []
    for w in r.workloads:
        rows.append([w] + [fmt(None if r.median(w, c, "rss_kb") is None else r.median(w, c, "rss_kb") / 1024, 0, "")
                           for c in columns])
    return table(["workload (MB)"] + [SHORT[c] for c in columns], rows)


def why_text():
    """The analysis of the missed targets, written by hand from `./dev why`
    (benchmarks/why.md): it is not derived from this run's numbers."""
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "why.md")) as f:
        return f.read().strip()


def summary(r):
    rows = []
    suite = r.raw["plan"].get("jinja2_tests", ())
    for c in ["ocular-adaptive-500", "ocular-adaptive-0", "ocular-adaptive-0-pftrace", "ocular-precise-500",
              "ocular-precise-0", "floor-adaptive", "floor-precise", "cprofile", "viztracer", "yappi",
              "pyinstrument", "line_profiler"]:
        values = r.column(c)
        if not values:
            continue
        rss = geomean(r.column(c, lambda w: r.ratio(w, c) and r.median(w, c, "rss_kb") / r.median(w, "untraced", "rss_kb")))
        stop = r.median("jinja2_tests", c, "stop_seconds") if c in suite else None
        suite_ratio = r.ratio("jinja2_tests", c) if c in suite else None
        rounds = r.round_geomeans(c)
        spread = f"{fmt(min(rounds))} – {fmt(max(rounds))}" if len(rounds) > 1 else "–"
        rows.append((LABELS[c], f"**{fmt(geomean(values))}**", spread, f"{fmt(min(values))} – {fmt(max(values))}",
                     fmt(suite_ratio), fmt(stop, 2, " s") if stop is not None else "–", fmt(rss)))
    return table(("contender", "traced / untraced (geometric mean)", "round by round", "range over workloads",
                  "jinja2's tests",
                  "stop_tracing() after jinja2's tests", "peak RSS / untraced"), rows)


def hot_list(r):
    lines = []
    for w in r.workloads:
        attached = next((m.get("hot") for m in r.samples.get((w, "line_profiler"), ()) if m.get("hot")), None)
        chosen = ", ".join(f"`{name}`" for _, _, name in r.raw["hot"].get(w, ()))
        lines.append(f"- {w}: {chosen or 'none'}" + ("" if attached else " (none could be attached)"))
    return "\n".join(lines)


def short_workloads(r, target):
    """Say which workloads fell short of the duration they were scaled to."""
    short = [(w, r.median(w, "untraced")) for w in r.workloads
             if r.median(w, "untraced") is not None and r.median(w, "untraced") < 0.9 * target]
    if not short:
        return ""
    return (" Short of that untraced (the probe that scales them misjudged them): "
            + ", ".join(f"{w} ({s:.2f} s)" for w, s in short) + ".")


def document(raw):
    r = Results(raw)
    meta, versions = raw["meta"], raw["versions"]
    minutes = meta.get("elapsed_s", 0) / 60
    rounds = min((r.rounds(w, c) for w in r.workloads for c in raw["plan"][w]), default=0)
    out = [
        "# Benchmarks",
        "",
        f"Produced by `./dev bench{command_flag(meta)}` (`benchmarks/run.py`) on {meta['date']} at "
        f"commit {meta['commit']}: {meta['cpu']}, {meta['cores']} cores, {meta['implementation']} "
        f"{meta['python']}; {rounds_done(raw)} rounds (median kept; at least {rounds} per figure"
        + (f"; the run was planned for {meta['repeat']} and stopped after {rounds_done(raw)}"
           if rounds_done(raw) < meta["repeat"] else "")
        + "), "
        f"the whole run took {minutes:.0f} min. One rdtsc costs {meta['rdtsc_ns']:.1f} ns here.",
        "",
        "Every measurement is a fresh interpreter running one workload once under one contender (the workload "
        "alone is timed, between the profiler's start and stop; stop_tracing() is timed apart). In each round "
        "every workload runs under every contender, their order rotating from round to round; figures are "
        "medians over the rounds and every ratio is of two medians of this one run. The machine is shared "
        "(2 cores, other jobs running, its speed changing between phases): single runs of one configuration "
        "differ by up to 30 %, ratios by 5-10 %.",
        "",
        f"Workloads: {len([w for w in r.workloads if w not in OWN_WORKLOADS])} from "
        f"pyperformance {versions.get('pyperformance')} (loaded from the installed package, their functions "
        "called in-process; loop counts scaled to about "
        f"{meta['seconds']:.2f} s untraced)"
        + (", then Ocular's own micro workloads ("
           + ", ".join(f"`{w}`" for w in r.workloads if w in OWN_WORKLOADS) + ")."
           if any(w in OWN_WORKLOADS for w in r.workloads) else ".")
        + short_workloads(r, meta["seconds"]),
        "",
        "Contenders: untraced; Ocular (A = adaptive, P = precise; 500 and 0 = deinstrument_threshold; "
        "+T = writing a .pftrace); the floor: the same sys.monitoring events as Ocular at threshold 0, "
        "delivered to a C callback that does nothing (`benchmarks/empty_callback.c`), and the timed floor: "
        "the same with a callback that reads the TSC and stores it; "
        + ", ".join(f"{LABELS[p]} {versions.get(p, '?')}" for p in ("cprofile", "viztracer", "yappi",
                                                                    "pyinstrument", "line_profiler"))
        + f"; Ocular {versions.get('ocular')}. VizTracer runs with its defaults (a ring of 1 M entries, the "
        "trace not saved), pyinstrument at its default 1 ms interval, line_profiler on each workload's three "
        "hottest functions by a cProfile pass (listed at the end).",
        "",
        "## Summary",
        "",
        "\"Round by round\" is the spread of the summary figure itself: the geometric mean over the workloads "
        "computed within each round, lowest to highest.",
        "",
        summary(r),
        "",
        "## Targets",
        "",
        targets(r),
        "",
        "## Why (from profiling the profiler)",
        "",
        why_text(),
        "",
        "## Traced / untraced time: Ocular and the floors",
        "",
        ratio_table(r, OCULAR_COLUMNS),
        "",
        "## Traced / untraced time: peers",
        "",
        ratio_table(r, PEER_COLUMNS),
        "",
        "![traced / untraced, log scale](benchmarks.png)",
        "",
        "## Per delivered event, threshold 0",
        "",
        "ns per event = (traced - untraced) / the events Ocular was delivered; the floors are divided by the same "
        "count (they receive the same events). Ocular's own overhead as a multiple of the floor's: "
        "(traced - untraced) / (floor - untraced). A negative figure is a traced median below the untraced "
        "one: on a workload with few events (stdlib, regex_v8) the difference is within the machine's noise.",
        "",
    ]
    for mode in ("adaptive", "precise"):
        out += [f"### {mode}", "", per_event(r, mode), ""]
    out += [
        "## Trace files (.pftrace)",
        "",
        "Time with a trace over time without, and the adaptive threshold-0 trace's size.",
        "",
        trace_table(r),
        "",
        "## stop_tracing()",
        "",
        "Median seconds of the call, and as a share of the traced run's duration.",
        "",
        stop_tables(r),
        "",
        "## Peak RSS",
        "",
        "ru_maxrss of the measuring process after the profiler stopped (MB, median).",
        "",
        rss_table(r),
        "",
    ]
    if raw.get("writer"):
        out += ["## The trace writer alone (`benchmarks/bench_writer.py`)", "", raw["writer"].strip(), ""]
    out += ["## line_profiler's functions (the three hottest attachable ones by cProfile's own time)", "",
            hot_list(r), ""]
    out += ["## Units", "", ", ".join(f"{w} {u:,}" for w, u in raw["units"].items()), ""]
    if raw["errors"]:
        out += ["## Failed measurements", ""]
        out += [f"- {e['workload']} / {e['config']} (round {e['round'] + 1}): `{e['error'][-300:]!r}`"
                for e in raw["errors"]]
        out.append("")
    return "\n".join(out)


def plot(raw, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = Results(raw)
    groups = r.workloads + ["geometric mean"]
    configs = [c for c in PLOTTED if r.column(c)]
    width = 0.8 / len(configs)
    figure, axes = plt.subplots(figsize=(max(10, 1.3 * len(groups)), 6.5))
    colours = plt.get_cmap("tab20").colors
    for i, c in enumerate(configs):
        values = [r.ratio(w, c) for w in r.workloads] + [geomean(r.column(c))]
        xs = [g + (i - len(configs) / 2 + 0.5) * width for g in range(len(groups))]
        axes.bar([x for x, v in zip(xs, values) if v], [v for v in values if v], width,
                 label=LABELS[c], color=colours[i % len(colours)])
    axes.set_yscale("log")
    axes.axhline(1.0, color="black", linewidth=0.8)
    axes.set_xticks(range(len(groups)))
    axes.set_xticklabels(groups, rotation=35, ha="right")
    axes.set_ylabel("traced / untraced time (log scale)")
    meta = raw["meta"]
    axes.set_title(f"Overhead per workload: {meta['cpu']}, {meta['cores']} cores, Python {meta['python']}, "
                   f"{meta['date']} (median of {rounds_done(raw)})", fontsize=10)
    axes.grid(axis="y", which="both", alpha=0.3)
    axes.set_ylim(top=axes.get_ylim()[1] * 1.2)
    axes.legend(ncol=6, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write(raw, directory):
    with open(os.path.join(directory, "benchmarks.md"), "w") as file:
        file.write(document(raw))
    if Results(raw).workloads:
        plot(raw, os.path.join(directory, "benchmarks.png"))


def readme_summary(raw):
    """The summary table with the machine it was measured on, for the README."""
    meta = raw["meta"]
    return (f"Measured with `./dev bench{command_flag(meta)}` on {meta['date']} (commit {meta['commit']}): {meta['cpu']}, "
            f"{meta['cores']} cores (shared), {meta['implementation']} {meta['python']}; medians of "
            f"{rounds_done(raw)} interleaved rounds, {len(Results(raw).workloads)} workloads. Full tables: "
            "docs/benchmarks.md.\n\n" + summary(Results(raw)))


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3) or sys.argv[2:] not in ([], ["--summary"]):
        raise SystemExit("usage: python benchmarks/report.py OUTPUT/benchmarks.json [--summary]")
    with open(sys.argv[1]) as file:
        raw = json.load(file)
    if sys.argv[2:]:
        print(readme_summary(raw))
    else:
        write(raw, os.path.dirname(os.path.abspath(sys.argv[1])))
