"""Whole stacks (root .. leaf, each weighted by the leaf's self time under
that stack) from the call tree, for the flame-graph formats (speedscope,
collapsed stacks, pprof).

The call tree Ocular records is a set of edges, caller -> callee, each with
the callee's calls, self and inclusive time under that caller; it does not
record whole paths. The stacks are reconstructed from it by walking down
from the roots (edges whose caller is None). They are exact where every
function on a stack has one caller, and an approximation elsewhere:

- A callee's self time under a caller (the edge's self cycles) is exact. It is
  spread over the stacks that lead to the caller in proportion to the
  caller's share of time under each of them.
- That share is carried down from the roots (edges whose caller is None): a
  function's time under a stack that ends in its caller P is taken to be
  P's share of that stack times the edge's part of the function's inclusive
  time over all its callers (by calls where no inclusive time was measured).
  This is what gprof-style tools assume: a function spends its time the same
  way whoever called it.
- Recursion: a function already on a stack ends it. Its self time under that
  stack (a recursive call's) goes to the frame already there, so recursion is
  folded into one frame, as its inclusive time is counted once.
- Whatever the shares, every edge's self time is given out whole, so the
  stacks of a thread add up to its functions' self time exactly, but for a
  stack whose weight came out below zero (noise, within the calibration's
  uncertainty), which is left out: flame graphs have no negative widths.
  (The engine rounds a function's self time and its edges' apart, by a
  cycle or so; the function's figure is the one kept.)
- At most MAX_STACKS stacks are followed down per thread, the heaviest
  first; a caller not reached by then (or not reachable from a root) starts
  a stack of its own, and the export says so on stderr.

With lines=True a leaf function's self time is split further over its lines
in proportion to their cycles (LineStats, merged over threads), and the leaf
frame names the line; frames above a leaf name the function's first line
(Ocular does not record call sites).
"""

import heapq
from collections import defaultdict

MAX_STACKS = 100_000


def _function_key(function):
    """(filename, qualname, first line): a function, as the stacks hold it."""
    return (function.filename, function.qualname, function.firstlineno)


def _merged_edges(edges):
    """{(caller or None, callee): [calls, self, inclusive]}: one
    thread's edges by function (code objects of one function merge here)."""
    merged = {}
    for caller, callee, stats in edges:
        key = (_function_key(caller) if caller is not None else None, _function_key(callee))
        entry = merged.setdefault(key, [0, 0, 0])
        entry[0] += stats.calls
        entry[1] += stats.cycles
        entry[2] += stats.inclusive_cycles
    return merged


class _Shares:
    """How a callee's time divides over its callers (recursive edges aside)."""

    def __init__(self, merged):
        self.inclusive = defaultdict(int)
        self.calls = defaultdict(int)
        self.callers = defaultdict(int)
        for (caller, callee), (calls, _self, inclusive) in merged.items():
            if caller != callee:
                self.inclusive[callee] += max(inclusive, 0)
                self.calls[callee] += calls
                self.callers[callee] += 1

    def of(self, callee, calls, inclusive):
        if self.inclusive[callee] > 0:
            return max(inclusive, 0) / self.inclusive[callee]
        if self.calls[callee] > 0:
            return calls / self.calls[callee]
        return 1.0 / self.callers[callee]


def _contexts(merged, progress):
    """{function: [(stack ending in it, share), ...]} for every caller of an
    edge, heaviest stacks expanded first; and how many functions had to start
    a stack of their own because MAX_STACKS was reached."""
    shares = _Shares(merged)
    children = defaultdict(list)
    roots = []
    for (caller, callee), (calls, _self, inclusive) in merged.items():
        if caller == callee:
            continue  # a recursive edge never makes a new stack
        share = shares.of(callee, calls, inclusive)
        (roots if caller is None else children[caller]).append((callee, share))
    contexts = defaultdict(list)
    heap, count, orphans = [], 0, 0

    def add(stack, share):
        nonlocal count
        contexts[stack[-1]].append((stack, share))
        count += 1
        # Heaviest first: the estimated inclusive time under this stack.
        heapq.heappush(heap, (-share * shares.inclusive[stack[-1]], count, stack, share))

    for callee, share in roots:
        add((callee,), share)
    needed = {caller for caller, _ in merged if caller is not None}
    while True:
        while heap and count < MAX_STACKS:
            _, _, stack, share = heapq.heappop(heap)
            for callee, part in children.get(stack[-1], ()):
                if callee not in stack:
                    add(stack + (callee,), share * part)
            progress.step("reconstructing stacks", count)
        missing = sorted(needed.difference(contexts))
        if not missing:
            return contexts, orphans
        # Unreachable from a root (or past MAX_STACKS): a stack of its own.
        if count >= MAX_STACKS:
            orphans += len(missing)
        for function in missing:
            add((function,), 1.0)


def _self_by_edge(thread, merged):
    """{(caller, callee): the callee's self cycles under the caller}, made to
    add up to each function's own self time (the engine rounds the two apart,
    by a cycle or so: the difference goes to the largest edge); and
    [(function, self cycles)] of functions no edge leads to."""
    by_edge = {key: entry[1] for key, entry in merged.items()}
    callers = defaultdict(list)
    for caller, callee in merged:
        callers[callee].append(caller)
    rootless = []
    for function in thread.functions:
        key = _function_key(function)
        if key not in callers:
            rootless.append((key, function.cycles))
            continue
        rest = function.cycles - sum(by_edge[(caller, key)] for caller in callers[key])
        if rest:
            largest = max(callers[key], key=lambda caller: by_edge[(caller, key)])
            by_edge[(largest, key)] += rest
    return by_edge, rootless


def _thread_stacks(thread, progress):
    """{stack: self cycles of its leaf under it} for one ThreadStats, the
    stacks whose weight is above zero."""
    merged = _merged_edges(thread.edges)
    contexts, orphans = _contexts(merged, progress)
    by_edge, rootless = _self_by_edge(thread, merged)
    weights = defaultdict(float)
    for key, cycles in rootless:
        weights[(key,)] += cycles
    for (caller, callee), self_cycles in by_edge.items():
        if caller is None:
            weights[(callee,)] += self_cycles
            continue
        stacks = contexts[caller]
        total = sum(share for _, share in stacks)
        for stack, share in stacks:
            part = share / total if total > 0 else 1.0 / len(stacks)
            # A function already on the stack takes its own recursive time.
            target = stack[: stack.index(callee) + 1] if callee in stack else stack + (callee,)
            weights[target] += self_cycles * part
        progress.step("stacks weighed", len(weights))
    # Signed to here, so that noise on two edges that end in the same stack
    # (a recursive function's) cancels before anything is left out.
    return {stack: weight for stack, weight in weights.items() if weight > 0}, orphans


def _function_lines(profile):
    """{(filename, qualname): lines its code has}. Precise mode knows each
    instruction's line. Adaptive mode knows a block's first and last line;
    a line between them is the function's unless a narrower function's block
    spans it too (the body of a function defined in this block)."""
    exact = defaultdict(set)
    for instruction in profile.instructions:
        if instruction.lineno:
            exact[(instruction.filename, instruction.qualname)].add(instruction.lineno)
    spans = defaultdict(list)
    for block in profile.blocks:
        if block.first_line and block.last_line and (block.filename, block.qualname) not in exact:
            spans[(block.filename, block.qualname)].append((block.first_line, block.last_line))
    width = {key: max(last for _, last in s) - min(first for first, _ in s) for key, s in spans.items()}
    narrowest = defaultdict(dict)  # filename -> {line: narrowest width of a function spanning it}
    for key, ranges in spans.items():
        claims = narrowest[key[0]]
        for first, last in ranges:
            for line in range(first, last + 1):
                claims[line] = min(claims.get(line, width[key]), width[key])
    lines = dict(exact)
    for key, ranges in spans.items():
        claims = narrowest[key[0]]
        own = lines.setdefault(key, set())
        for first, last in ranges:
            own.update((first, last))
            own.update(n for n in range(first + 1, last) if claims[n] >= width[key])
    return lines


def _line_shares(profile):
    """{function: [(line, fraction), ...]}: how each function's self time
    divides over its lines, by their cycles (LineStats)."""
    function_lines = _function_lines(profile)
    cycles = {(line.filename, line.lineno): line.cycles for line in profile.lines}
    shares = {}
    for function in profile.functions:
        lines = function_lines.get((function.filename, function.qualname), ())
        weighted = [(n, cycles.get((function.filename, n), 0)) for n in sorted(lines)]
        weighted = [(n, c) for n, c in weighted if c > 0]
        total = sum(c for _, c in weighted)
        if total:
            shares[_function_key(function)] = [(n, c / total) for n, c in weighted]
    return shares


def stacks(profile, progress, lines=False):
    """[(ThreadStats, [(frames root first, self cycles), ...]), ...] per thread.
    A frame is (filename, qualname, first line, line): line is the first line
    but for a leaf split by lines. Stacks come in no particular order."""
    line_shares = _line_shares(profile) if lines else {}
    result, orphans = [], 0
    for thread in profile.threads:
        weights, lost = _thread_stacks(thread, progress)
        orphans += lost
        frames_of = {}  # one frame tuple per function, shared by all its stacks
        out = []
        for stack, weight in weights.items():
            frames = tuple(frames_of.get(f) or frames_of.setdefault(f, (*f, f[2])) for f in stack)
            split = line_shares.get(stack[-1])
            if not split:
                out.append((frames, weight))
            else:
                for line, fraction in split:
                    out.append((frames[:-1] + ((*stack[-1], line),), weight * fraction))
            progress.step("stacks made", len(out))
        result.append((thread, out))
    if orphans:
        progress.say(f"more than {MAX_STACKS:,} stacks in a thread: {orphans:,} functions "
                     "are shown as roots of their own stacks")
    return result


def integral(values):
    """Whole numbers for `values` that add up to their rounded sum (each value
    rounded with the remainder of the ones before it carried on)."""
    carried, emitted = 0.0, 0
    for value in values:
        carried += value
        whole = round(carried)
        yield whole - emitted
        emitted = whole


def label(frame):
    """`qualname (file:line)`, the name a frame goes by in the text formats."""
    filename, qualname, _first, line = frame
    return f"{qualname} ({filename}:{line})"


def thread_label(thread):
    """A thread's name for viewers: its Python name and native id."""
    if thread.name:
        return f"{thread.name} (thread {thread.native_id})"
    return f"thread {thread.native_id}"
