"""The HTML report (ocular.export.html): its figures against the profile and
against counts kept apart from Ocular, the call tree's shape, safe embedding
of hostile text, no external reference, caps on large profiles, and the page
as headless Chromium renders it (console errors, interactions, screenshot)."""

import json
import linecache
import re
import subprocess
import sys

import pytest

import chromium
import ocular
import report_workload
from conftest import traced
from ocular import _testclock
from ocular._profile import BlockStats, CallStats, FunctionStats, LineStats, Profile, ThreadStats
from ocular.export import html as html_report

WORKLOAD = report_workload.__file__
HEAT_RGB = (255, 80, 40)  # report.css --heat-rgb: the hottest line's colour


def data_of(document):
    match = re.search(r'<script type="application/json" id="ocular-data">(.*?)</script>', document, re.S)
    return json.loads(match.group(1))


def run(mode, threshold=0, **options):
    profile, _ = traced(report_workload.run, threshold=threshold, mode=mode, **options)
    return profile


@pytest.fixture(scope="module")
def precise():
    profile = run("precise")
    return profile, dict(report_workload.CALLS)


@pytest.fixture(scope="module")
def adaptive():
    return run("adaptive")


def functions_by_name(data):
    return {row[1]: row for row in data["functions"] if data["files"][row[0]] == WORKLOAD}


def heat_of(data, filename):
    return next(h for h in data["heat"] if data["files"][h["file"]] == filename)


# ---- the data the page carries ---------------------------------------------------


def test_function_rows_hold_the_profiles_figures_and_the_true_call_counts(precise):
    profile, calls = precise
    rows = functions_by_name(html_report.report_data(profile))
    assert set(calls) <= set(rows)
    for name, count in calls.items():
        assert rows[name][3] == count, name  # calls, against the workload's own count
    for function in profile.functions:
        if function.filename == WORKLOAD:
            row = rows[function.qualname]
            assert row[2:8] == [function.firstlineno, function.calls, function.cycles, function.inclusive_cycles,
                                function.uncertainty, function.unattributed_cycles]


def test_heatmap_lines_are_the_profiles_lines_with_their_source(precise):
    profile, _ = precise
    data = html_report.report_data(profile)
    heat = heat_of(data, WORKLOAD)
    assert data["heat"][0] is heat  # the file with the most self time comes first
    expected = {line.lineno: [line.lineno, line.hits, line.cycles, int(line.shared), line.uncertainty]
                for line in profile.lines if line.filename == WORKLOAD}
    assert {row[0]: row for row in heat["lines"]} == expected
    source = linecache.getlines(WORKLOAD)
    assert [n for n, _ in heat["source"]] == list(range(1, len(source) + 1))  # a short file: all of it
    assert all(text == source[n - 1].rstrip("\n") for n, text in heat["source"])


def test_precise_drill_down_lists_each_lines_instructions_with_specialised_names():
    # Each site DISABLEd past its 100th hit (no sampling windows: this workload
    # is shorter than the traced warm-up), CPython specialises again.
    profile = run("precise", threshold=100, sample_interval_ms=None)
    data = html_report.report_data(profile)
    heat = heat_of(data, WORKLOAD)
    specialised = 0
    for insn in profile.instructions:
        if insn.filename != WORKLOAD or insn.lineno is None:
            continue
        name = f"{insn.specialized} ({insn.opname})" if insn.specialized else insn.opname
        specialised += bool(insn.specialized)
        assert [insn.offset, name, insn.hits, insn.cycles, insn.uncertainty, insn.qualname] in \
            heat["instructions"][str(insn.lineno)]
    assert specialised, "the workload should run specialised instructions"
    assert sum(len(v) for v in heat["instructions"].values()) == sum(
        1 for i in profile.instructions if i.filename == WORKLOAD and i.lineno is not None)


def test_adaptive_heatmap_marks_shared_lines_and_carries_blocks_not_instructions(adaptive):
    heat = heat_of(html_report.report_data(adaptive), WORKLOAD)
    shared = {line.lineno for line in adaptive.lines if line.filename == WORKLOAD and line.shared}
    assert shared, "a block spanning several lines should give shared lines"
    assert {row[0] for row in heat["lines"] if row[3]} == shared
    blocks = [b for b in adaptive.blocks if b.filename == WORKLOAD and b.first_line]
    assert sorted(heat["blocks"]) == sorted(
        [b.first_line, b.last_line, b.start_offset, b.end_offset, b.hits, b.cycles, b.uncertainty, b.qualname]
        for b in blocks)
    assert heat["instructions"] == {}  # adaptive instruction figures are shares, not measurements


def paths(data):
    """{node: [function names from the root's child down to the node]}."""
    names, result = data["functions"], {0: []}
    for index, (function, parent, _) in enumerate(data["tree"]):
        if index:
            result[index] = result[parent] + [names[function][1]]
    return result


def run_path(found):
    return next(p for p in found.values() if p and p[-1] == "run")


def test_call_tree_is_exact_where_each_function_has_one_caller(precise):
    profile, _ = precise
    data = html_report.report_data(profile)
    tree, found = data["tree"], paths(data)
    edges = {(c.qualname if c else None, f.qualname): s for c, f, s in profile.edges if f.filename == WORKLOAD}
    base = run_path(found)  # the test harness's frames above run()
    for below in ([], ["chain"], ["chain", "leaf"], ["chain", "leaf", "hot"]):
        path = base + below
        node = next(i for i, p in found.items() if p == path)
        caller = path[-2] if len(path) > 1 else None
        assert tree[node][2] == edges[(caller, path[-1])].inclusive_cycles, path
    assert tree[0][2] == sum(s.inclusive_cycles for c, f, s in profile.edges if c is None)


def test_call_tree_guards_recursion_and_never_outgrows_a_parent(precise):
    profile, _ = precise
    data = html_report.report_data(profile)
    tree, found = data["tree"], paths(data)
    for node, path in found.items():
        assert len(path) == len(set(path)), path  # no function twice on one path
        children = [t[2] for t in tree if t[1] == node]
        assert sum(children) <= tree[node][2] + len(children)  # rounding
    base = run_path(found)
    assert base + ["ping", "pong"] in found.values()
    assert base + ["fib"] in found.values() and base + ["fib", "fib"] not in found.values()


# ---- safety --------------------------------------------------------------------------

HOSTILE = ("</script><script>document.title='PWNED'</script><!-- <img src=x "
           "onerror=\"document.title='PWNED'\"> \u2028\u2029 & &amp; </style>")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A profile whose source text, function name and file name are all markup."""
    folder = tmp_path_factory.mktemp("src") / "<b>x<"
    folder.mkdir()
    filename = str(folder / "script>.py")  # the path holds "</script>"
    source = ('def victim(n):\n    s = """' + HOSTILE + '"""\n    t = 0\n    for i in range(n):\n'
              '        t += len(s)\n    return t\n')
    with open(filename, "w", encoding="utf-8") as file:
        file.write(source)
    namespace = {}
    exec(compile(source, filename, "exec"), namespace)
    victim = namespace["victim"]
    victim.__code__ = victim.__code__.replace(co_qualname="<img src=x onerror=\"document.title='PWNED'\">")
    profile, _ = traced(victim, 300, mode="precise", include_only=["script>.py"])
    path = tmp_path_factory.mktemp("report") / "hostile.html"
    profile.to_html(path)
    return profile, path, filename


def test_hostile_text_cannot_end_the_data_or_open_markup(hostile):
    _, path, filename = hostile
    document = path.read_text(encoding="utf-8")
    # The template's own closing tags and comment, and nothing else of the kind.
    assert document.lower().count("</script") == 2
    assert document.count("<!--") == 1
    assert "\u2028" not in document and "\u2029" not in document
    data = data_of(document)
    assert filename in data["files"]
    heat = heat_of(data, filename)
    assert any(text and HOSTILE in text for _, text in heat["source"])
    assert "<img src=x onerror=\"document.title='PWNED'\">" in [row[1] for row in data["functions"]]


def test_page_references_nothing_outside_itself(precise):
    profile, _ = precise
    # The data is text the page never parses as markup (and the profile's own
    # source may well say "src="): the page is everything else.
    document = re.sub(r'(id="ocular-data">).*?(</script>)', r"\1\2", html_report.render(profile), flags=re.S)
    assert not re.search(r"""\b(src|href|action)\s*=\s*(?!["']?#)""", document, re.I)
    for needle in ("http:", "https:", "url(", "@import", "<link", "<iframe", "fetch(", "XMLHttpRequest"):
        assert needle not in document, needle
    assert "default-src 'none'" in document  # and the browser holds the page to it


# ---- arguments ---------------------------------------------------------------------------


@pytest.mark.parametrize("options, error, words", [
    ({"max_files": 0}, ValueError, ["max_files", "0"]),
    ({"max_functions": 2.5}, TypeError, ["max_functions", "float"]),
    ({"context_lines": -1}, ValueError, ["context_lines"]),
    ({"max_tree_nodes": True}, TypeError, ["max_tree_nodes", "bool"]),
    ({"colour": "red"}, TypeError, ["colour", "max_files"]),
])
def test_bad_options_raise_before_writing(adaptive, tmp_path, options, error, words):
    path = tmp_path / "report.html"
    with pytest.raises(error) as raised:
        adaptive.to_html(path, **options)
    for word in words:
        assert word in str(raised.value)
    assert not path.exists()


def test_bad_paths(adaptive, tmp_path):
    with pytest.raises(TypeError, match="path"):
        adaptive.to_html(3)
    missing = tmp_path / "no" / "such" / "dir" / "report.html"
    with pytest.raises(OSError) as raised:
        adaptive.to_html(missing)
    assert str(missing) in str(raised.value)


# ---- large profiles ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A synthetic profile far larger than the page's caps: 200 files of 40
    functions, one of them a 20,000-line file, a 300-deep call chain."""
    folder = tmp_path_factory.mktemp("big")
    long_file = folder / "long.py"
    long_file.write_text("".join(f"x{n} = {n}\n" for n in range(20_000)))
    functions, lines, blocks = [], [], []
    for f in range(200):
        filename = str(long_file) if f == 0 else str(folder / f"missing_{f}.py")  # no source for these
        for k in range(40):
            first = 1 + k * 450
            cycles = (f + 1) * 1_000 + k
            functions.append(FunctionStats(filename, f"f{f}_{k}", first, k + 1, cycles * 10, cycles * 20))
            for n in range(first, first + 10):
                lines.append(LineStats(filename, n, k + 1, cycles))
                blocks.append(BlockStats(filename, f"f{f}_{k}", n * 2, n * 2 + 1, n, n, 1, k + 1, cycles))
    edges = [(None, functions[0], CallStats(1, 0, 10**12))]
    edges += [(a, b, CallStats(1, 0, 10**12 - i)) for i, (a, b) in enumerate(zip(functions, functions[1:300]))]
    edges += [(None, f, CallStats(1, f.cycles, f.inclusive_cycles)) for f in functions[300:]]
    total = sum(f.cycles for f in functions)
    profile = Profile(
        mode="adaptive", deinstrument_threshold=0, tsc_hz=3e9, duration_ns=10**9, events=10**6, disabled_sites=0,
        functions=tuple(sorted(functions, key=lambda f: -f.cycles)),
        lines=tuple(sorted(lines, key=lambda line: -line.cycles)),
        blocks=tuple(sorted(blocks, key=lambda b: -b.cycles)),
        threads=(ThreadStats(1, "MainThread", total),), _edges=tuple(edges))
    path = folder / "big.html"
    profile.to_html(path)
    return profile, path, str(long_file)


def test_large_profile_is_capped_and_says_so(big):
    profile, path, long_file = big
    limits = html_report.LIMITS
    document = path.read_text(encoding="utf-8")
    assert len(document) < 4_000_000  # the profile's records alone are ~100x that as JSON
    data = data_of(document)
    assert len(data["heat"]) == limits["max_files"]
    assert len(data["tree"]) <= limits["max_tree_nodes"]
    tree_functions = {row[0] for row in data["tree"][1:]}
    assert len(data["functions"]) <= limits["max_functions"] + len(tree_functions)
    notes = " ".join(data["notes"])
    for words in (f"of {len(profile.functions)}", "of 200 files", "flame graph leaves out"):
        assert words in notes
    # The long file has the least self time, so it is not among the 20 ...
    assert long_file not in {data["files"][heat["file"]] for heat in data["heat"]}
    small = html_report.report_data(profile, max_files=200, max_file_lines=500, context_lines=2)
    heat = heat_of(small, long_file)  # ... unless asked for: then it is cut to its hottest lines
    shown = [n for n, _ in heat["source"]]
    assert len(shown) <= 500
    hottest = max((line for line in profile.lines if line.filename == long_file), key=lambda line: line.cycles)
    assert hottest.lineno in shown and hottest.lineno + 2 in shown
    assert any("long file" in note for note in small["notes"])


# ---- in the browser --------------------------------------------------------------------------

CHECKS = """
  results.ready = document.body.getAttribute("data-ocular");
  const rows = Array.from(document.querySelectorAll("#source table.src tr.line"));
  results.lineRows = rows.length;
  results.fileTitle = document.querySelector("#source .file-title").textContent;
  const hottest = rows.filter((r) => r.style.getPropertyValue("--heat") === "1.000");
  results.hottestLines = hottest.map((r) => r.cells[1].textContent);
  results.calls = {};
  for (const tr of document.querySelectorAll("#function-table tbody tr"))
    results.calls[tr.cells[0].textContent] = tr.cells[2].textContent;
  document.querySelectorAll("#function-table th")[2].click();  // sort by calls
  results.firstByCalls = document.querySelector("#function-table tbody tr").cells[0].textContent;
  hottest[0].cells[4].dispatchEvent(new MouseEvent("mousemove", {bubbles: true, clientX: 5, clientY: 5}));
  results.tooltip = document.getElementById("tooltip").textContent;
  results.tooltipShown = !document.getElementById("tooltip").hidden;
  const drill = document.querySelector("#source tr.drillable");
  drill.click();
  results.drillLine = drill.cells[1].textContent;
  results.drillRows = drill.nextSibling.classList.contains("insns")
    ? drill.nextSibling.querySelectorAll("tr").length - 1 : 0;
  results.drillNames = Array.from(drill.nextSibling.querySelectorAll("td.name")).map((td) => td.textContent);
  results.frames = document.querySelectorAll("#flame-graph .frame").length;
  const search = document.getElementById("flame-search");
  search.value = "fib";
  search.dispatchEvent(new Event("input"));
  results.matches = Array.from(document.querySelectorAll("#flame-graph .frame.match")).map((f) => f.textContent);
  results.status = document.getElementById("flame-status").textContent;
  const frameOf = (name) => Array.from(document.querySelectorAll("#flame-graph .frame")).find((f) => f.textContent === name);
  frameOf("chain").click();
  results.zoomed = parseFloat(frameOf("chain").style.width);
  results.graphWidth = document.getElementById("flame-graph").clientWidth;
  results.images = document.querySelectorAll("img").length;
  results.title = document.title;
"""


def test_chromium_renders_the_report_without_errors_and_its_parts_work(precise, tmp_path):
    browser = chromium.require()
    profile, calls = precise
    document = html_report.render(profile)
    data = data_of(document)
    page = tmp_path / "report.html"
    page.write_text(chromium.instrument(document, CHECKS), encoding="utf-8")
    _, report, console = chromium.render(browser, page, tmp_path)
    assert report["problems"] == [] and console == []
    got = report["results"]
    assert got["ready"] == "ready"
    heat = data["heat"][0]
    assert got["fileTitle"] == WORKLOAD and got["lineRows"] == len(heat["source"])
    hottest = max(heat["lines"], key=lambda row: row[2])
    assert got["hottestLines"] == [str(hottest[0])]
    for name, count in calls.items():
        assert got["calls"][name] == f"{count:,}"
    assert got["firstByCalls"] == max(functions_by_name(data).values(), key=lambda row: row[3])[1]
    assert got["tooltipShown"] and f"line {hottest[0]}: {hottest[1]:,} hits" in got["tooltip"]
    insns = heat["instructions"][got["drillLine"]]
    assert got["drillRows"] == len(insns)
    assert [name for name in got["drillNames"] if name not in {i[5] for i in insns}] == [i[1] for i in insns]
    tree = data["tree"]
    assert got["frames"] == sum(node[2] * got["graphWidth"] >= tree[0][2] for node in tree)  # those >= 1 px
    assert got["matches"] == ["fib"] and "1 frame match" in got["status"]
    assert abs(got["zoomed"] - got["graphWidth"]) < 1  # the zoomed frame fills the graph
    assert got["images"] == 0 and got["title"] == "Ocular profile"


def test_chromium_shows_hostile_text_as_text(hostile, tmp_path):
    browser = chromium.require()
    _, path, _ = hostile
    page = tmp_path / "hostile.html"
    checks = """
      results.title = document.title;
      results.images = document.querySelectorAll("img").length;
      results.code = Array.from(document.querySelectorAll("#source td.code")).map((td) => td.textContent);
      results.names = Array.from(document.querySelectorAll("#function-table tbody td:first-child")).map((td) => td.textContent);
    """
    page.write_text(chromium.instrument(path.read_text(encoding="utf-8"), checks), encoding="utf-8")
    _, report, console = chromium.render(browser, page, tmp_path)
    assert report["problems"] == [] and console == []
    got = report["results"]
    assert got["title"] == "Ocular profile" and got["images"] == 0
    assert any(HOSTILE in line for line in got["code"]), got["code"]
    assert "<img src=x onerror=\"document.title='PWNED'\">" in got["names"]


def test_chromium_opens_a_capped_large_profile(big, tmp_path):
    browser = chromium.require()
    _, path, _ = big
    page = tmp_path / "big.html"
    checks = """
      results.ready = document.body.getAttribute("data-ocular");
      results.files = document.querySelectorAll("#file-list li").length;
      results.notes = document.querySelectorAll("#notes li").length;
    """
    page.write_text(chromium.instrument(path.read_text(encoding="utf-8"), checks), encoding="utf-8")
    _, report, console = chromium.render(browser, page, tmp_path)
    assert report["problems"] == [] and console == []
    assert report["results"] == {"ready": "ready", "files": html_report.LIMITS["max_files"], "notes": 3}


def test_chromium_screenshot_shows_the_heatmap(tmp_path):
    # On the test clock, so that the hottest line of the report is hot()'s
    # loop, inside the screenshot: on the real clock a preemption can make a
    # line below the fold the hottest, and nothing in view is full heat.
    browser = chromium.require()
    rules = [(report_workload.hot.__code__, "edge", None, 50_000)]
    with _testclock.on_test_clock(work={"edge": 10, "start": 10, "return": 10}, rules=rules):
        profile, _ = traced(report_workload.run, threshold=0, mode="adaptive")
    hottest_line = max(profile.lines, key=lambda line: line.cycles)
    assert hottest_line.filename == WORKLOAD and hottest_line.lineno in range(
        report_workload.hot.__code__.co_firstlineno, report_workload.leaf.__code__.co_firstlineno)
    page, png = tmp_path / "report.html", tmp_path / "report.png"
    profile.to_html(page)
    assert chromium.screenshot(browser, page, png, tmp_path, width=900, height=600) == []
    width, height, rows = chromium.read_png(png)
    assert (width, height) == (900, 600)

    def near(pixel, colour):
        return all(abs(a - b) <= 3 for a, b in zip(pixel, colour))

    hottest = sum(near(p, HEAT_RGB) for row in rows for p in row)
    # Lighter shades of the heat colour: red at full, green and blue raised by white.
    shades = sum(p[0] >= 250 and 80 < p[1] < 245 and p[2] < p[1] - 10 for row in rows for p in row)
    assert hottest > 2000, hottest  # at least the hottest line's row, across the source pane
    assert shades > 2000, shades


# ---- the command line ----------------------------------------------------------------------


def test_command_line_writes_the_report_after_the_run(tmp_path):
    script = tmp_path / "script.py"
    script.write_text("def work(n):\n    return sum(i * i for i in range(n))\n\n\nprint(work(1000))\n")
    report = tmp_path / "report.html"
    done = subprocess.run([sys.executable, "-m", "ocular", "--no-trace", "--threshold", "0", "--html", str(report),
                           str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{sum(i * i for i in range(1000))}\n"
    assert f"html written to {report}" in done.stderr
    data = data_of(report.read_text(encoding="utf-8"))
    assert "work" in [row[1] for row in data["functions"]] and str(script) in data["files"]


def test_command_line_refuses_a_report_path_it_cannot_write_before_running(tmp_path):
    script = tmp_path / "script.py"
    script.write_text("open('ran', 'w').close()\n")
    done = subprocess.run([sys.executable, "-m", "ocular", "--no-trace", "--html", str(tmp_path / "no" / "r.html"),
                           str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and "--html" in done.stderr and str(tmp_path / "no") in done.stderr
    assert not (tmp_path / "ran").exists()
