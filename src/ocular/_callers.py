"""Text view of the call tree, like pstats' print_callers / print_callees:
for a function, each caller (or callee) with the calls along that edge and
the callee's self and inclusive time under that caller.

Edges come from Profile.edges (merged over threads) or, for one thread, from
its ThreadStats.edges. A caller of None is time below what Ocular saw: the
program's entry, or a caller in untraced code.
"""

from ._report import WIDTH, _check_limit, _fit, _function_label, _ms, _sorted_functions, _table
from ._select import function_of, thread_of

_UNKNOWN = "(no caller Ocular saw)"


def _key(function):
    return (function.filename, function.qualname, function.firstlineno)


def _scope(profile, thread):
    """(functions, edges) of the whole profile or of one thread."""
    if thread is None:
        return profile.functions, profile.edges
    record = thread_of(profile, thread)
    return record.functions, record.edges


def _targets(profile, functions, target, limit):
    if target is None:
        return _sorted_functions(functions, "self")[:limit]
    wanted = _key(function_of(profile, target))
    found = [f for f in functions if _key(f) == wanted]
    if not found:
        raise ValueError(f"{wanted[1]} ({wanted[0]}:{wanted[2]}) did not run on that thread")
    return found


def _render(profile, target, limit, thread, direction):
    _check_limit(limit)
    functions, edges = _scope(profile, thread)
    out = []
    for function in _targets(profile, functions, target, limit):
        key = _key(function)
        if direction == "callers":
            pairs = [(caller, stats) for caller, callee, stats in edges if _key(callee) == key]
            title, other = "Callers of", "caller"
            legend = f"self, incl: the time of {function.qualname} when called by each caller"
        else:
            pairs = [(callee, stats) for caller, callee, stats in edges
                     if caller is not None and _key(caller) == key]
            title, other = "Callees of", "callee"
            legend = f"self, incl: the time of each callee when called by {function.qualname}"
        pairs.sort(key=lambda pair: -pair[1].inclusive_cycles)
        calls = f"{function.calls:,} call{'s' if function.calls != 1 else ''}"
        heading = (f"{title} {_function_label(function, WIDTH - 60)}: {calls}, "
                   f"self {_ms(profile, function.cycles)} ms, inclusive {_ms(profile, function.inclusive_cycles)} ms")
        rows = [(f"{stats.calls:,}", _ms(profile, stats.cycles), _ms(profile, stats.inclusive_cycles),
                 _function_label(other_function) if other_function is not None else _UNKNOWN)
                for other_function, stats in pairs[:limit]]
        lines = _table(_fit(heading, WIDTH), ("calls", "self ms", "incl ms", other), rows,
                       _fit(legend, WIDTH - 2))
        if limit is not None and len(pairs) > limit:
            lines.insert(-2, f"  ... and {len(pairs) - limit} more")  # above the legend
        out += lines
    if not out:
        out = ["(no functions recorded)"]
    return "\n".join(out).rstrip() + "\n"


def render_callers(profile, target=None, limit=20, thread=None):
    """Who called `target` (every function hottest first when None), `limit` rows each."""
    return _render(profile, target, limit, thread, "callers")


def render_callees(profile, target=None, limit=20, thread=None):
    """What `target` called (every function hottest first when None), `limit` rows each."""
    return _render(profile, target, limit, thread, "callees")
