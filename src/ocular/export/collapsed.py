"""Collapsed stacks: one `root;caller;leaf weight` line per stack, the input
of flamegraph.pl and inferno, which speedscope and the Firefox Profiler also
import.

The stacks are those reconstructed from the call tree (see _stacks: exact
where each function on a stack has one caller, apportioned where it has
several), merged over threads; a stack's weight is its leaf's self time under
it, in whole nanoseconds (unit="ns") or cycles (unit="cycles"), rounded so
that the weights add up to the rounded total. Frames are named
`qualname (file:line)`: the function's first line, or with lines=True, for
the leaf, the line that ran.
"""

from collections import defaultdict

from . import _output, _stacks


def _name(frame):
    # ';' separates frames and a newline ends the record: neither may appear
    # inside one (a file name could hold either).
    return _stacks.label(frame).replace(";", ",").replace("\n", " ")


def lines_of(profile, progress, lines=False, unit="ns"):
    """[(stack text, whole weight), ...], sorted by stack text."""
    merged = defaultdict(float)
    names = {}
    for _thread, stacks in _stacks.stacks(profile, progress, lines):
        for stack, cycles in stacks:
            text = ";".join([names.get(f) or names.setdefault(f, _name(f)) for f in stack])
            merged[text] += cycles
            progress.step("stacks named", len(merged))
    texts = sorted(merged)
    if unit == "ns":
        weights = (profile.cycles_to_ns(merged[text]) for text in texts)
    else:
        weights = (merged[text] for text in texts)
    return [(text, weight) for text, weight in zip(texts, _stacks.integral(weights)) if weight]


def write(profile, path, **options):
    path, settings = _output.arguments("collapsed", path, options, lines=(False, _output.flag),
                                       unit=("ns", _output.choice("ns", "cycles")))
    progress = _output.Progress(settings, "collapsed", path)
    with _output.output_file(path, "collapsed", binary=False) as handle:
        records = lines_of(profile, progress, settings.lines, settings.unit)
        for done, (text, weight) in enumerate(records, 1):
            handle.write(f"{text} {weight}\n")
            progress.step("stacks written", done, len(records))
    progress.finish(f"{len(records):,} stacks")
    return path
