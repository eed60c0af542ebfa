"""pprof: profile.proto, gzipped, the format of `go tool pprof` and of
continuous-profiling services such as Pyroscope and Grafana.

Encoded by hand (_protowire), so writing it needs no protobuf package. Two
sample types, ("cycles", "count") and ("wall", "nanoseconds") (the default);
one sample per reconstructed stack and thread (see _stacks: exact where each
function on a stack has one caller, apportioned where it has several), with
the leaf's self time under the stack, labelled with the thread's name and
native id. A location is a function at a line: its first line, or with
lines=True, for the leaf, the line that ran. Functions carry their file and
first line. The samples of a thread add up to its functions' self cycles.

Profile.period is 1 (every value is measured, none sampled); duration_nanos
is the run's; time_nanos is when the export was written, less the run's
duration (a Profile does not keep the wall-clock time it started at).
"""

import gzip
import time

from . import _output, _stacks
from ._protowire import delimited, integer, packed

SAMPLE_TYPES = (("cycles", "count"), ("wall", "nanoseconds"))


class _Tables:
    """The string table ("" first, as the format requires), functions and
    locations, each numbered in order of first use (ids start at 1)."""

    def __init__(self):
        self.strings = {"": 0}
        self.functions = {}
        self.locations = {}

    def string(self, text):
        return self.strings.setdefault(text, len(self.strings))

    def function(self, filename, qualname, firstlineno):
        key = (filename, qualname, firstlineno)
        if key not in self.functions:
            name = self.string(qualname)
            self.functions[key] = (len(self.functions) + 1, name, self.string(filename))
        return self.functions[key][0]

    def location(self, function_id, line):
        return self.locations.setdefault((function_id, line), len(self.locations) + 1)


def _value_type(tables, kind, unit):
    return integer(1, tables.string(kind)) + integer(2, tables.string(unit))


def encode(profile, progress, lines=False):
    """(the serialized, not yet gzipped, Profile message; how many samples it holds)."""
    tables = _Tables()
    header = b"".join(delimited(1, _value_type(tables, *pair)) for pair in SAMPLE_TYPES)
    samples = []
    for thread, stacks in _stacks.stacks(profile, progress, lines):
        labels = (delimited(3, integer(1, tables.string("thread"))
                            + integer(2, tables.string(_stacks.thread_label(thread))))
                  + delimited(3, integer(1, tables.string("thread_id")) + integer(3, thread.native_id)))
        cycles = _stacks.integral(c for _, c in stacks)
        ns = _stacks.integral(profile.cycles_to_ns(c) for _, c in stacks)
        for (stack, _), whole_cycles, whole_ns in zip(stacks, cycles, ns):
            if not (whole_cycles or whole_ns):
                continue
            location_ids = []
            for filename, qualname, first, line in reversed(stack):  # the leaf first
                location_ids.append(tables.location(tables.function(filename, qualname, first), line))
            samples.append(delimited(2, packed(1, location_ids) + packed(2, [whole_cycles, whole_ns])
                                     + labels))
            progress.step("stacks encoded", len(samples), len(stacks))
    # One mapping that says every location is symbolized already (functions,
    # files, lines), so that pprof looks for no binary to symbolize it with.
    mapping = (integer(1, 1) + integer(5, tables.string("python"))
               + integer(7, 1) + integer(8, 1) + integer(9, 1))  # has_functions, _filenames, _line_numbers
    body = [header, *samples, delimited(3, mapping)]
    for (function_id, line), location_id in tables.locations.items():
        body.append(delimited(4, integer(1, location_id) + integer(2, 1)
                              + delimited(4, integer(1, function_id) + integer(2, line))))
    for (_filename, _qualname, start), (function_id, name, filename) in tables.functions.items():
        body.append(delimited(5, integer(1, function_id) + integer(2, name) + integer(3, name)
                              + integer(4, filename) + integer(5, start)))
    comment = tables.string(f"Ocular profile, {profile.mode} mode, de-instrumentation threshold "
                            f"{profile.deinstrument_threshold}; stacks reconstructed from the call tree")
    wall = tables.string("wall")
    period_type = _value_type(tables, "wall", "nanoseconds")
    # The string table last: every string above has been numbered by now.
    body.extend(delimited(6, text) for text in tables.strings)
    body.append(integer(9, time.time_ns() - profile.duration_ns) + integer(10, profile.duration_ns)
                + delimited(11, period_type) + integer(12, 1) + packed(13, [comment])
                + integer(14, wall))
    return b"".join(body), len(samples)


def write(profile, path, **options):
    path, settings = _output.arguments("pprof", path, options, lines=(False, _output.flag))
    progress = _output.Progress(settings, "pprof", path)
    with _output.output_file(path, "pprof") as handle:
        message, count = encode(profile, progress, settings.lines)
        handle.write(gzip.compress(message, mtime=0))
    progress.finish(f"{count:,} samples")
    return path
