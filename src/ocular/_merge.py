"""One Profile from several runs of one program (the pytest plugin's combined
profile of all its tests).

Records with the same identity (a function's file, name and first line; a
block's code and offsets; a line; ...) become one: their counts and cycles
add up, flags are or-ed. The fields are read by name, so a field the model
gains later is merged too: integers add, booleans or, anything else keeps
the first run's value. Runs are added one at a time (Merger.add costs the
size of the run added, not of everything so far), so a long test session
never holds more than one merged profile.
"""

from dataclasses import fields, replace

from ._profile import CallStats

# The fields that say which thing a record is about (never added up).
IDENTITY = {
    "FunctionStats": ("filename", "qualname", "firstlineno"),
    "BlockStats": ("filename", "qualname", "start_offset", "end_offset", "first_line", "last_line",
                   "instructions"),
    "LineStats": ("filename", "lineno"),
    "InstructionStats": ("filename", "qualname", "offset", "opname", "lineno"),
    "SiteStats": ("filename", "qualname", "event", "offset"),
    "ThreadStats": ("native_id",),
}
_RECORD_LISTS = ("functions", "blocks", "lines", "instructions", "sites")
# Profile fields merged by hand below, or the same in every run.
_OWN_RULES = ("mode", "deinstrument_threshold", "tsc_hz", "calibration", "clock_source", "trace_path",
              "threads", "_edges") + _RECORD_LISTS


def _identity(record):
    return tuple(getattr(record, name) for name in IDENTITY[type(record).__name__])


def _combine(a, b):
    """a and b (the same thing in two runs) as one record."""
    key = IDENTITY[type(a).__name__]
    changes = {}
    for field in fields(a):
        if field.name in key:
            continue
        x, y = getattr(a, field.name), getattr(b, field.name)
        if isinstance(x, bool):
            changes[field.name] = x or bool(y)
        elif isinstance(x, int) and isinstance(y, int):
            changes[field.name] = x + y
        elif x is None:
            changes[field.name] = y
    return replace(a, **changes)


def _add_records(merged, records):
    for record in records:
        key = _identity(record)
        old = merged.get(key)
        merged[key] = record if old is None else _combine(old, record)


def _add_edges(sums, edges):
    for caller, callee, stats in edges:
        key = (None if caller is None else _identity(caller), _identity(callee))
        old = sums.get(key, (0, 0, 0))
        sums[key] = (old[0] + stats.calls, old[1] + stats.cycles, old[2] + stats.inclusive_cycles)


def _edges(sums, functions):
    """The call tree over the merged FunctionStats `functions` (by identity)."""
    return tuple((functions.get(caller) if caller else None, functions[callee], CallStats(*values))
                 for (caller, callee), values in sums.items() if callee in functions)


def _order(record):
    """Hottest first; ties by identity, so that the order does not depend on
    the order the runs were added in (None, e.g. a line-less instruction's
    line, sorts before any number)."""
    return (-record.cycles, tuple((value is not None, value if value is not None else 0)
                                  for value in _identity(record)))


def _hottest_first(records):
    return tuple(sorted(records, key=_order))


class _Thread:
    __slots__ = ("record", "functions", "edges")

    def __init__(self, record):
        self.record = record
        self.functions = {}
        self.edges = {}


class Merger:
    """Add Profiles of one mode and threshold with add(); result() is their merge."""

    def __init__(self):
        self.first = None
        self.runs = 0
        self.totals = {}
        self.records = {name: {} for name in _RECORD_LISTS}
        self.edge_sums = {}
        self.threads = {}
        self.cycles = 0
        self.seconds = 0.0

    def add(self, profile):
        if self.first is None:
            self.first = profile
        elif (profile.mode, profile.deinstrument_threshold) != (self.first.mode,
                                                                self.first.deinstrument_threshold):
            raise ValueError(
                "profiles to merge must share mode and deinstrument_threshold: "
                f"{self.first.mode}/{self.first.deinstrument_threshold} and "
                f"{profile.mode}/{profile.deinstrument_threshold}")
        self.runs += 1
        for field in fields(profile):
            if field.name in _OWN_RULES:
                continue
            value, old = getattr(profile, field.name), self.totals.get(field.name)
            if isinstance(value, int) and not isinstance(value, bool):
                self.totals[field.name] = (old or 0) + value
            elif isinstance(value, str) and value and value not in (old or "").split("; "):
                self.totals[field.name] = f"{old}; {value}" if old else value  # e.g. every failure
            elif field.name not in self.totals:
                self.totals[field.name] = value
        for name in _RECORD_LISTS:
            _add_records(self.records[name], getattr(profile, name))
        _add_edges(self.edge_sums, profile.edges)
        for thread in profile.threads:
            merged = self.threads.get(thread.native_id)
            if merged is None:
                merged = self.threads[thread.native_id] = _Thread(thread)
            else:
                merged.record = _combine(merged.record, thread)
            _add_records(merged.functions, thread.functions)
            _add_edges(merged.edges, thread.edges)
        # Each run calibrated its own clock rate; the merged rate converts the
        # summed cycles to the summed times.
        if profile.tsc_hz:
            covered = sum(t.covered_cycles for t in profile.threads)
            self.cycles += covered
            self.seconds += covered / profile.tsc_hz

    def result(self):
        if self.first is None:
            raise ValueError("nothing to merge: add() at least one profile")
        changes = dict(self.totals)
        for name in _RECORD_LISTS:
            merged = self.records[name].values()
            changes[name] = tuple(merged) if name == "sites" else _hottest_first(merged)
        functions = {_identity(f): f for f in changes["functions"]}
        changes["_edges"] = _edges(self.edge_sums, functions)
        threads = []
        for thread in self.threads.values():
            threads.append(replace(thread.record, functions=_hottest_first(thread.functions.values()),
                                   edges=_edges(thread.edges, thread.functions)))
        changes["threads"] = tuple(sorted(threads, key=lambda t: (-t.covered_cycles, t.native_id)))
        changes["tsc_hz"] = self.cycles / self.seconds if self.seconds else self.first.tsc_hz
        changes["trace_path"] = None
        return replace(self.first, **changes)


def merge_profiles(profiles):
    """One Profile holding every run of `profiles` (Profiles of one mode and threshold)."""
    merger = Merger()
    for profile in profiles:
        merger.add(profile)
    return merger.result()
