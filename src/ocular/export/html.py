"""The HTML report: one self-contained file (no network, no external assets,
works from file://) with a source heatmap per file, a sortable function
table, an icicle of the call tree with search and, in precise mode, the
instructions of every line.

The page is ocular/html/report.html with report.css, report.js and the
profile's figures (JSON) put in place. The JavaScript builds every element
from that data with textContent, never innerHTML, so no source text or name
is ever parsed as HTML; the JSON is escaped so that nothing in it can end
its <script> element. Large profiles are cut down here, before the page has
to carry them, and the page says what was left out.
"""

import heapq
import json
import linecache
import os

from .. import html as _assets
from . import _output

# What the page carries at most (write()'s options); see LIMIT_HELP.
LIMITS = {
    "max_files": 20,
    "max_functions": 500,
    "max_file_lines": 2000,
    "context_lines": 3,
    "max_blocks": 5000,
    "max_tree_nodes": 2000,
}
MIN_NODE_SHARE = 0.001  # call-tree nodes below this share of the tree are not drawn
LIMIT_HELP = {
    "max_files": "files with a source heatmap (those with the most self time)",
    "max_functions": "rows of the function table (the most self time)",
    "max_file_lines": "source lines shown per file; longer files show the measured lines and their context",
    "context_lines": "lines shown around each measured line of a long file",
    "max_blocks": "basic blocks shown per file (the most cycles)",
    "max_tree_nodes": "nodes of the call-tree icicle (the heaviest)",
}


def _limit(name, value):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    least = 0 if name == "context_lines" else 1
    if value < least:
        raise ValueError(f"{name} must be at least {least}, not {value}")


def _check_limits(options):
    for name, value in options.items():
        if name not in LIMITS:
            raise TypeError(f"to_html() got an unknown option {name!r}; valid options: {', '.join(LIMITS)}")
        _limit(name, value)
    return {**LIMITS, **options}


def _key(function):
    return (function.filename, function.qualname, function.firstlineno)


class _Functions:
    """The functions the page names, each once, as rows of the data's `functions`."""

    def __init__(self, files):
        self.files = files
        self.index = {}
        self.rows = []

    def add(self, function):
        key = _key(function)
        if key not in self.index:
            self.index[key] = len(self.rows)
            self.rows.append([self.files.add(function.filename), function.qualname, function.firstlineno,
                              function.calls, function.cycles, function.inclusive_cycles,
                              function.uncertainty, function.unattributed_cycles])
        return self.index[key]


class _Names:
    """File names, each once (the data refers to them by index)."""

    def __init__(self):
        self.index = {}
        self.names = []

    def add(self, name):
        if name not in self.index:
            self.index[name] = len(self.names)
            self.names.append(name)
        return self.index[name]


def _call_tree(profile, functions, max_nodes):
    """The icicle's nodes, heaviest first: [function row, parent node, cycles],
    node 0 being the root (all threads' outermost calls).

    Ocular records edges (caller -> callee, with the callee's inclusive time
    under that caller), not whole paths. A node's children are its function's
    callees, each with its edge's inclusive time scaled by the node's part of
    the function's inclusive time: the gprof assumption that a function spends
    its time the same way whoever called it. A function already on the path
    is not expanded again (recursion: its time is in the outer frame, as its
    inclusive time counts it once)."""
    children = {}
    for caller, callee, stats in profile.edges:
        children.setdefault(None if caller is None else _key(caller), []).append(
            (callee, max(stats.inclusive_cycles, 0)))
    roots = children.get(None, [])
    total = sum(cycles for _, cycles in roots)
    nodes = [[-1, -1, total]]
    if total <= 0:
        return nodes, 0
    floor = total * MIN_NODE_SHARE
    pending = [(-cycles, order, callee, 0, frozenset()) for order, (callee, cycles) in enumerate(roots)
               if cycles >= floor]
    heapq.heapify(pending)
    order = len(pending)
    left_out = len(roots) - len(pending)
    while pending and len(nodes) < max_nodes:
        cycles, _, function, parent, path = heapq.heappop(pending)
        cycles = -cycles
        index = len(nodes)
        nodes.append([functions.add(function), parent, round(cycles)])
        key = _key(function)
        path = path | {key}
        below = [(callee, share) for callee, share in children.get(key, ()) if _key(callee) not in path]
        scale = min(1.0, cycles / function.inclusive_cycles) if function.inclusive_cycles > 0 else 0.0
        spent = sum(share for _, share in below) * scale
        if spent > cycles:  # measured figures need not add up exactly; never wider than the parent
            scale *= cycles / spent
        for callee, share in below:
            width = share * scale
            if width >= floor and width > 0:
                heapq.heappush(pending, (-width, order, callee, index, path))
                order += 1
            else:
                left_out += 1
    return nodes, left_out + len(pending)


def _source_rows(filename, measured, hottest, limits):
    """(rows [lineno, text or None], elided) for one file: the whole file when
    short enough, else windows around its measured lines, hottest first."""
    source = linecache.getlines(filename)
    if not source:
        return [[n, None] for n in sorted(measured)], False
    if len(source) <= limits["max_file_lines"]:
        shown = set(range(1, len(source) + 1))
    else:
        shown, context = set(), limits["context_lines"]
        for lineno in hottest:
            window = set(range(max(1, lineno - context), min(len(source), lineno + context) + 1))
            if shown and len(shown | window) > limits["max_file_lines"]:
                break
            shown |= window
    shown |= {n for n in measured if n > len(source)}  # the file changed since the run
    rows = [[n, source[n - 1].rstrip("\r\n") if n <= len(source) else None] for n in sorted(shown)]
    return rows, len(shown) < len(source)


def _files(profile, functions, files, limits, notes):
    self_time = {}
    for function in profile.functions:
        self_time[function.filename] = self_time.get(function.filename, 0) + max(function.cycles, 0)
    lines_of, blocks_of, insns_of = {}, {}, {}
    for line in profile.lines:
        lines_of.setdefault(line.filename, []).append(line)
    ranked = sorted(lines_of, key=lambda name: -self_time.get(name, 0))
    chosen = ranked[: limits["max_files"]]
    if len(ranked) > len(chosen):
        notes.append(f"Source heatmaps for the {len(chosen)} files with the most self time "
                     f"(of {len(ranked)} files with measured lines).")
    wanted = set(chosen)
    for block in profile.blocks:
        if block.filename in wanted and block.first_line is not None:
            blocks_of.setdefault(block.filename, []).append(block)
    # Adaptive mode's instruction figures are even shares of their blocks,
    # not measurements: only precise mode's are worth a drill-down.
    for insn in profile.instructions if profile.mode == "precise" else ():
        if insn.filename in wanted and insn.lineno is not None:
            insns_of.setdefault((insn.filename, insn.lineno), []).append(insn)

    result, elided = [], 0
    for filename in chosen:
        lines = lines_of[filename]
        hottest = [line.lineno for line in sorted(lines, key=lambda line: -line.cycles)]
        measured = set(hottest)
        rows, cut = _source_rows(filename, measured, hottest, limits)
        elided += cut
        shown = {n for n, _ in rows}
        blocks = sorted((b for b in blocks_of.get(filename, ()) if b.first_line in shown),
                        key=lambda b: -b.cycles)
        if len(blocks) > limits["max_blocks"]:
            notes.append(f"{os.path.basename(filename)}: the {limits['max_blocks']} blocks with the most "
                         f"cycles of {len(blocks)}.")
            blocks = blocks[: limits["max_blocks"]]
        instructions = {}
        for lineno in shown & measured:
            for insn in sorted(insns_of.get((filename, lineno), ()), key=lambda i: i.offset):
                name = f"{insn.specialized} ({insn.opname})" if insn.specialized else insn.opname
                instructions.setdefault(str(lineno), []).append(
                    [insn.offset, name, insn.hits, insn.cycles, insn.uncertainty, insn.qualname])
        result.append({
            "file": files.add(filename),
            "cycles": self_time.get(filename, 0),
            "source": rows,
            "lines": [[line.lineno, line.hits, line.cycles, int(line.shared), line.uncertainty]
                      for line in lines if line.lineno in shown],
            "blocks": [[b.first_line, b.last_line if b.last_line is not None else b.first_line,
                        b.start_offset, b.end_offset, b.hits, b.cycles, b.uncertainty, b.qualname]
                       for b in blocks],
            "instructions": instructions,
        })
    if elided:
        notes.append(f"{elided} long file{'s' if elided > 1 else ''} show only the measured lines and "
                     f"{limits['context_lines']} lines around them (at most {limits['max_file_lines']} "
                     "lines per file).")
    return result


def report_data(profile, **options):
    """Everything the page shows, as JSON-ready lists and dicts."""
    limits = _check_limits(options)
    files = _Names()
    functions = _Functions(files)
    notes = []
    for function in profile.functions[: limits["max_functions"]]:
        functions.add(function)
    if len(profile.functions) > limits["max_functions"]:
        notes.append(f"The function table holds the {limits['max_functions']} functions with the most "
                     f"self time (of {len(profile.functions)}), and any other function the flame graph "
                     "shows.")
    tree, left_out = _call_tree(profile, functions, limits["max_tree_nodes"])
    if left_out:
        notes.append(f"The flame graph leaves out {left_out} call-tree nodes narrower than "
                     f"{MIN_NODE_SHARE:.1%} of it or past its {limits['max_tree_nodes']} heaviest; "
                     "their time stays in their callers' width.")
    heat = _files(profile, functions, files, limits, notes)
    if profile.threads and len(profile.threads) > 1:
        notes.append(f"Times are summed over {len(profile.threads)} threads.")
    if profile.failure:
        notes.append(f"Recording stopped early: {profile.failure}")
    from .. import __version__

    meta = {
        "version": __version__,  # of the Ocular that wrote the page
        "mode": profile.mode,
        "threshold": profile.deinstrument_threshold,
        "tsc_hz": profile.tsc_hz,
        "clock": profile.clock_source,
        "duration_ns": profile.duration_ns,
        "events": profile.events,
        "disabled_sites": profile.disabled_sites,
        "threads": len(profile.threads),
        "total": profile.total_cycles,
        "unattributed": profile.unattributed_cycles,
        "untraced": profile.untraced_cycles,
        "overhead": profile.overhead_cycles,
        "lost_frames": profile.lost_frames,
        "function_count": len(profile.functions),
    }
    return {"meta": meta, "notes": notes, "files": files.names, "functions": functions.rows,
            "tree": tree, "heat": heat}


def script_json(data):
    """JSON that can sit inside <script>: no '<', '>' or '&' (so no '</script>'
    or '<!--'), and no U+2028/U+2029 (line terminators to older JavaScript)."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    return text


def render(profile, **options):
    """The report as one HTML document (a str)."""
    return _assets.page(script_json(report_data(profile, **options)))


def write(profile, path, **options):
    """Write the report to `path`; options: see LIMITS, and quiet/progress as every format."""
    path, settings = _output.arguments("html", path, options,
                                       **{name: (default, _limit) for name, default in LIMITS.items()})
    limits = {name: getattr(settings, name) for name in LIMITS}
    with _output.output_file(path, "html", binary=False) as handle:
        handle.write(render(profile, **limits))  # one step: no progress lines to give (quiet is accepted)
    return path
