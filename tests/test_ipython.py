"""%load_ext ocular, %%ocular and %ocular in an IPython shell."""

import html
import json
import re

import pytest
from IPython.core.displaypub import CapturingDisplayPublisher
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

import ocular
from ocular import ipython as magics

CELL = """
calls = 0


def tick(i):
    global calls
    calls += 1
    return i * 2


total = sum(tick(i) for i in range(37))
"""


@pytest.fixture(scope="module")
def shell(tmp_path_factory):
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    config.InteractiveShell.ipython_dir = str(tmp_path_factory.mktemp("ipython"))
    shell = InteractiveShell.instance(config=config)
    shell.run_line_magic("load_ext", "ocular")
    yield shell
    InteractiveShell.clear_instance()


@pytest.fixture
def displayed(shell):
    """What the shell displays (IPython.display.display) during a test."""
    publisher, original = CapturingDisplayPublisher(), shell.display_pub
    shell.display_pub = publisher
    yield publisher.outputs
    shell.display_pub = original


def page_data(bundle):
    """The report data inside the HTML the magic displays."""
    match = re.fullmatch(r'<iframe srcdoc="(.*)" sandbox="allow-scripts" style="[^"]*"></iframe>',
                         bundle["text/html"], re.S)
    assert match, bundle["text/html"][:200]
    page = html.unescape(match.group(1))
    data = re.search(r'id="ocular-data">(.*?)</script>', page, re.S).group(1)
    return json.loads(data)


def test_cell_magic_profiles_the_cell_and_shows_the_report_under_it(shell, displayed):
    result = shell.run_cell("%%ocular --mode precise --threshold 0 -r\n" + CELL)
    assert result.success, result.error_in_exec
    profile = result.result
    assert isinstance(profile, ocular.Profile)
    assert (profile.mode, profile.deinstrument_threshold) == ("precise", 0)
    assert shell.user_ns["total"] == 2 * sum(range(37))  # the cell ran, in the user's namespace
    tick = next(f for f in profile.functions if f.qualname == "tick")
    assert tick.calls == shell.user_ns["calls"] == 37
    (output,) = displayed
    text = output["data"]["text/plain"]
    assert text == profile.report(15)  # the text report, for frontends without HTML
    assert "tick" in text and "calls += 1" in text  # with the cell's own source lines
    data = page_data(output["data"])
    rows = {row[1]: row for row in data["functions"]}
    assert rows["tick"][3] == 37
    heat = data["heat"][0]
    assert data["files"][heat["file"]] == tick.filename
    assert [text for _, text in heat["source"]] == CELL.lstrip("\n").splitlines()  # as IPython ran it
    assert all(f.filename == tick.filename for f in profile.functions), profile.functions  # nothing of the magic's own


def test_a_returned_profile_displays_as_one_line(shell, capsys):
    shell.run_cell("%%ocular -r --no-html\nsum(range(10))\n")
    out = capsys.readouterr().out.split("Out[")[1]
    assert re.fullmatch(r"\d+\]: <ocular.Profile: adaptive mode, threshold 500, \d+ functions, [\d.]+ ms of program "
                        r"time; print\(profile\) for the report>\n", out)


def test_line_magic_profiles_one_statement(shell, displayed):
    shell.run_cell(CELL)
    profile = shell.run_line_magic("ocular", "--threshold 0 --no-html -r x = sum(tick(i) for i in range(5))")
    assert shell.user_ns["x"] == 20
    tick = next(f for f in profile.functions if f.qualname == "tick")
    assert tick.calls == 5 and profile.mode == "adaptive"
    (output,) = displayed
    assert set(output["data"]) == {"text/plain"}  # --no-html


def test_magic_writes_the_html_report_where_asked(shell, displayed, tmp_path):
    path = tmp_path / "cell report.html"
    assert shell.run_line_magic("ocular", f"--html '{path}' sum(range(100))") is None  # no -r: nothing returned
    assert "ocular-data" in path.read_text(encoding="utf-8")
    assert f"HTML report written to {path}" in displayed[0]["data"]["text/plain"]


@pytest.mark.parametrize("line, words", [
    ("--mode fast", ["invalid choice: 'fast'", "adaptive", "precise", "usage: %ocular"]),
    ("--threshold -1", ["deinstrument_threshold", "-1"]),
    ("--threshold lots", ["--threshold", "invalid int value: 'lots'"]),
    ("--limit 0", ["--limit must be at least 1"]),
    ("--nonsense", ["unrecognized arguments: --nonsense"]),
    ("--output trace.txt", [".json", ".pftrace", "trace.txt"]),
    ("--html /no/such/dir/r.html", ["/no/such/dir"]),
    ("--html 'unclosed", ["quotation"]),
])
def test_bad_options_show_a_usage_error_and_run_nothing(shell, displayed, capsys, line, words):
    shell.user_ns.pop("ran", None)
    result = shell.run_cell(f"%%ocular {line}\nran = True\n")
    assert not result.success
    out, err = capsys.readouterr()
    assert "UsageError" in err
    for word in words:
        assert word in err
    assert "Traceback" not in out + err
    assert "ran" not in shell.user_ns and not ocular.is_tracing() and displayed == []


def test_line_magic_without_a_statement_is_a_usage_error(shell, capsys):
    shell.run_cell("%ocular --mode precise")
    _, err = capsys.readouterr()
    assert "UsageError" in err and "needs a statement" in err and "Traceback" not in err


def test_an_exception_in_the_cell_still_shows_the_report_and_stops(shell, displayed, capsys):
    result = shell.run_cell("%%ocular\ndef boom():\n    raise KeyError('in the cell')\nboom()\n")
    assert isinstance(result.error_in_exec, KeyError)
    assert not ocular.is_tracing()
    assert "boom" in displayed[0]["data"]["text/plain"]
    assert "KeyError" in capsys.readouterr().out  # the cell's own traceback, as IPython shows it


def test_a_cell_that_does_not_compile_shows_a_syntax_error_only(shell, displayed, capsys):
    shell.run_cell("%%ocular\nx = 1 +* 2\n")
    out, err = capsys.readouterr()
    assert "SyntaxError" in out + err and "ipython.py" not in out + err  # no frame of the magic's
    assert displayed == [] and not ocular.is_tracing()


def test_help_prints_the_options(shell, capsys):
    shell.run_cell("%%ocular --help\nx = 1\n")
    out, err = capsys.readouterr()
    for option in ("--mode", "--threshold", "--exclude", "--include-only", "--limit", "--output", "--html", "--return"):
        assert option in out
    assert err == ""


@pytest.mark.parametrize("line, words, statement", [
    ("--mode precise -r f(x)", ["--mode", "precise", "-r"], "f(x)"),
    ("--mode=precise f(-1)", ["--mode=precise"], "f(-1)"),
    ("-x + 1", [], "-x + 1"),
    ("--html 'my report.html' g()", ["--html", "my report.html"], "g()"),
    ("--threshold 0 -- -y", ["--threshold", "0"], "-y"),
    ("  total = sum(range(3))", [], "total = sum(range(3))"),
])
def test_statement_and_options_split_as_written(line, words, statement):
    assert magics.split_statement(line, magics._parser()) == (words, statement)
