"""profile.annotate(target): a function's or file's source, one row per
source line, with that line's figures, its block boundaries, shared lines and
(in precise mode) its instructions."""

import inspect
import linecache
import sys

import pytest

import workloads
from conftest import functions_of, traced

SOURCE = 55  # the column where the source text starts (see ocular.annotate)


def line_rows(text):
    """{line number: row} of the rows that show a source line."""
    rows = {}
    for row in text.splitlines():
        number = row[:6].strip()
        if number.isdigit():
            rows[int(number)] = row
    return rows


def source_of(function):
    lines, first = inspect.getsourcelines(function)
    return {first + i: line.rstrip("\n").expandtabs() for i, line in enumerate(lines)}


@pytest.fixture(scope="module")
def adaptive():
    return traced(workloads.mixed_no_genexpr)[0]


@pytest.fixture(scope="module")
def precise():
    def run():
        workloads.loops(3000)  # past the threshold: CPython specialises its instructions

    return traced(run, mode="precise", threshold=50, sample_interval_ms=None)[0]


def test_every_source_line_of_the_function_is_a_row(adaptive):
    for function in (workloads.loops, workloads.Shape.of, workloads.make_adder):
        rows = line_rows(adaptive.annotate(function))
        expected = source_of(function)
        assert list(rows) == list(expected), function  # one row per line, in order, no more
        for lineno, text in expected.items():
            assert rows[lineno][SOURCE:] == text.rstrip(), (function, lineno)
    assert line_rows(adaptive.annotate(workloads.Shape.of))[29][SOURCE:] == "    @classmethod"


def test_rows_carry_the_lines_figures_and_marks(adaptive):
    rows = line_rows(adaptive.annotate(workloads.loops))
    lines = {line.lineno: line for line in adaptive.lines if line.filename == workloads.__file__}
    starts = {b.first_line for b in adaptive.blocks if b.qualname == "loops"}
    shown = 0
    for lineno, row in rows.items():
        line = lines.get(lineno)
        hits, cycles = row[7:16].strip(), row[17:29].strip()
        if line is None:
            assert hits == cycles == "", lineno
            continue
        shown += 1
        assert hits == f"{line.hits:,}"
        assert cycles == ("~" if 0 < line.uncertainty and abs(line.cycles) <= line.uncertainty else "") + \
            f"{line.cycles:,}"
        assert (row[49] == "=") == line.shared
    assert shown >= 10
    assert {n for n, row in rows.items() if row[51] == ">"} == starts
    assert all(row[51] in "|> " for row in rows.values())
    assert any(row[51] == "|" for row in rows.values())  # a block spanning lines
    assert "RESUME" not in adaptive.annotate(workloads.loops)  # instructions: precise mode only


def test_precise_mode_lists_each_lines_instructions(precise):
    text = precise.annotate(workloads.loops)
    instructions = [i for i in precise.instructions if i.qualname == "loops"]
    rows = [row for row in text.splitlines() if row[SOURCE + 3:SOURCE + 4] == "@"]
    assert len(rows) == len(instructions)
    specialized = [i for i in instructions if i.specialized]
    assert specialized
    for insn in instructions:
        name = f"{insn.specialized} ({insn.opname})" if insn.specialized else insn.opname
        matching = [row for row in rows if row[SOURCE + 3:].split()[:1] == [f"@{insn.offset}"]]
        assert len(matching) == 1 and matching[0].split("  ")[-1].strip() == name, insn
    assert "BINARY_OP_ADD_INT (BINARY_OP)" in text
    # each instruction row is under its line
    current = None
    for row in text.splitlines():
        if row[:6].strip().isdigit():
            current = int(row[:6])
        elif row[SOURCE + 3:SOURCE + 4] == "@":
            offset = int(row[SOURCE + 4:].split()[0])
            assert next(i for i in instructions if i.offset == offset).lineno == current


def test_the_target_may_be_named_in_several_ways(adaptive):
    expected = adaptive.annotate(workloads.loops)
    record = functions_of(adaptive, workloads)["loops"]
    for target in (workloads.loops.__code__, record, "loops", "workloads.py:loops",
                   f"workloads.py:{workloads.loops.__code__.co_firstlineno}"):
        assert adaptive.annotate(target) == expected, target
    whole = adaptive.annotate(workloads.__file__)
    assert whole.startswith("Annotated source of") and "functions recorded in it" in whole
    rows = line_rows(whole)
    assert list(rows) == list(range(1, len(linecache.getlines(workloads.__file__)) + 1))
    assert adaptive.annotate("tests/workloads.py") == whole == adaptive.annotate("workloads.py")
    with pytest.raises(ValueError, match="not in this profile"):
        adaptive.annotate("no_such_function")
    with pytest.raises(ValueError, match="not in this profile"):
        adaptive.annotate(test_the_target_may_be_named_in_several_ways)
    with pytest.raises(TypeError):
        adaptive.annotate(3.5)


def test_source_that_is_not_available_is_said_so(tmp_path, monkeypatch):
    namespace = {}
    exec(compile("def made(n):\n    total = 0\n    for i in range(n):\n        total += i\n    return total\n",
                 "<made up>", "exec"), namespace)
    profile, _ = traced(namespace["made"], 50)
    text = profile.annotate(namespace["made"])
    assert "source not available" in text and "<made up>" in text
    assert set(line_rows(text)) == {1, 2, 3, 4, 5}  # the lines with figures, without their text

    module = tmp_path / "vanishing.py"
    module.write_text("def work(n):\n    return sum(range(n))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import vanishing

    profile, _ = traced(vanishing.work, 10)
    module.unlink()
    linecache.checkcache(str(module))
    del sys.modules["vanishing"]
    text = profile.annotate("vanishing.py:work")
    assert "source not available" in text and 2 in line_rows(text)
