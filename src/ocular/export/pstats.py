"""pstats: the file cProfile writes and `pstats.Stats(path)` loads, for
snakeviz, tuna, gprof2dot and the pstats browser.

The file is one marshal'd dict, as cProfile's dump_stats writes it:
{(filename, first line, name): (primitive calls, calls, self s, cumulative s,
{caller key: (calls, primitive calls, self s, cumulative s)})}, times in
seconds. Here the name is the qualified name (cProfile has the bare name).

From the call tree:
- calls are PY_START events; primitive calls are the calls not made by the
  function to itself. cProfile also counts a call through another function
  (A -> B -> A) as recursive; the call tree has no whole paths to see it, so
  such a call counts as primitive here.
- self time is the function's; cumulative time its inclusive time, in which a
  recursive call's time is counted once (as cProfile counts it).
- a caller entry holds the edge: the callee's calls, self and inclusive time
  under that caller; its primitive count equals its calls (cProfile's
  recursion of a caller-callee pair is not in the call tree). A root (caller
  None: below what Ocular saw) has no entry, as the function cProfile was
  started in has none.

marshal is what pstats reads; Ocular itself never loads these files.
"""

import marshal
from collections import defaultdict

from . import _output


def _key(function):
    return (function.filename, function.firstlineno, function.qualname)


def stats_of(profile, progress):
    """The dict pstats holds as Stats.stats."""
    def seconds(cycles):
        return profile.cycles_to_ns(cycles) / 1e9

    callers = defaultdict(dict)
    self_calls = defaultdict(int)
    for caller, callee, edge in profile.edges:
        if caller is None:
            continue
        if _key(caller) == _key(callee):
            self_calls[_key(callee)] += edge.calls
        callers[_key(callee)][_key(caller)] = (edge.calls, edge.calls, seconds(edge.cycles),
                                               seconds(edge.inclusive_cycles))
    stats = {}
    for done, function in enumerate(profile.functions, 1):
        key = _key(function)
        stats[key] = (function.calls - self_calls[key], function.calls, seconds(function.cycles),
                      seconds(function.inclusive_cycles), callers[key])
        progress.step("functions", done, len(profile.functions))
    return stats


def write(profile, path, **options):
    path, settings = _output.arguments("pstats", path, options)
    progress = _output.Progress(settings, "pstats", path)
    with _output.output_file(path, "pstats") as handle:
        stats = stats_of(profile, progress)
        marshal.dump(stats, handle)
    progress.finish(f"{len(stats):,} functions")
    return path
