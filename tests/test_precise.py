"""Precise mode: cycles per bytecode instruction."""

import dis
import sys

import ocular
import workloads
from conftest import Listener, functions_of, traced

WORKLOADS = workloads.__file__


def instruction_hits(profile):
    return {(i.qualname, i.offset): i.hits for i in profile.instructions
            if i.filename == WORKLOADS and i.opname != "RESUME"}


def test_instruction_hits_equal_an_independent_listener():
    code = workloads.long_function.__code__
    assert len(code.co_code) > 256
    assert any(i.opname == "EXTENDED_ARG" for i in dis.get_instructions(code))
    with Listener(["INSTRUCTION"], WORKLOADS) as listener:
        expected_result = workloads.precise_mix()
    expected = {(q, off): n for (q, off, _), n in listener.counts.items()}
    profile, result = traced(workloads.precise_mix, mode="precise")
    assert result == expected_result
    assert instruction_hits(profile) == expected
    assert profile.mode == "precise"


def test_threshold_caps_instruction_hits_and_stop_uninstruments():
    profile, _ = traced(workloads.precise_mix, mode="precise", threshold=7, sample_interval_ms=None)
    assert max(i.hits for i in profile.instructions) <= 7
    assert max(s.hits for s in profile.sites) <= 7
    assert any(s.disabled for s in profile.sites if s.event == "INSTRUCTION")
    # After stop nothing of Ocular's is left: a fresh listener sees every
    # instruction again, so no site stayed DISABLEd or instrumented by us.
    assert all(sys.monitoring.get_tool(t) != ocular.TOOL_NAME for t in range(6))
    if hasattr(sys.monitoring, "_all_events"):
        assert sys.monitoring._all_events() == {}
    with Listener(["INSTRUCTION"], WORKLOADS) as listener:
        workloads.loops(40)
    assert max(listener.counts.values()) > 7


def test_expensive_instruction_is_charged_at_every_iteration():
    # its share of the loop is a real-clock figure: benchmarks/realclock.py,
    # expensive-instruction
    multiply = next(i.offset for i in dis.get_instructions(workloads.big_multiply)
                    if i.opname == "BINARY_OP" and i.argrepr == "*")
    profile, _ = traced(workloads.big_multiply, mode="precise")
    (insn,) = [i for i in profile.instructions if i.qualname == "big_multiply" and i.offset == multiply]
    assert insn.opname == "BINARY_OP" and insn.hits == 300 and insn.cycles > 0


def test_blocks_lines_and_functions_are_derived_from_instructions():
    profile, _ = traced(workloads.precise_mix, mode="precise")
    for name in ("loops", "long_function"):
        insns = sum(i.cycles for i in profile.instructions if i.qualname == name)
        blocks = sum(b.cycles for b in profile.blocks if b.qualname == name)
        assert insns == blocks
    assert functions_of(profile, workloads)["fib"].calls == 67
    lines = sum(line.cycles for line in profile.lines if line.filename == WORKLOADS)
    insns = sum(i.cycles for i in profile.instructions if i.filename == WORKLOADS and i.lineno)
    assert lines == insns
    assert "Hottest instructions" in profile.report()


def test_specialized_forms_are_reported_after_deinstrumentation():
    def run():
        total = 0
        for i in range(20000):
            total = total + i
        return total

    profile, _ = traced(run, mode="precise", threshold=20, sample_interval_ms=None)
    adds = [i for i in profile.instructions if i.qualname.endswith("run") and i.opname == "BINARY_OP"]
    assert adds and adds[0].specialized == "BINARY_OP_ADD_INT"


def test_switching_modes_between_runs():
    results = []
    for mode in ("precise", "adaptive", "precise"):
        profile, _ = traced(workloads.loops, 50, mode=mode)
        assert profile.mode == mode
        results.append(functions_of(profile, workloads)["loops"].calls)
        if mode == "precise":
            assert profile.instructions and all(i.filename for i in profile.instructions)
            assert instruction_hits(profile)
        else:  # adaptive spreads a block evenly: its instructions share its hits
            blocks = {(b.qualname, b.start_offset): b for b in profile.blocks}
            for block in blocks.values():
                members = [i for i in profile.instructions if i.qualname == block.qualname
                           and block.start_offset <= i.offset <= block.end_offset]
                assert {i.hits for i in members} == {block.hits}
                assert sum(i.cycles for i in members) == block.cycles
    assert results == [1, 1, 1]
