"""Exact counts, checked against independent sources: cProfile, a pure-Python
sys.monitoring listener, and dis."""

import cProfile
import dis
import pstats
import sys

import ocular
import workloads
from conftest import Listener, code_objects, functions_of, traced

WORKLOADS = workloads.__file__


def test_call_counts_equal_cprofile():
    profiler = cProfile.Profile()
    profiler.enable()
    expected_result = workloads.mixed_no_genexpr()
    profiler.disable()
    expected = {(line, name): stat[1] for (filename, line, name), stat in pstats.Stats(profiler).stats.items()
                if filename == WORKLOADS}
    profile, result = traced(workloads.mixed_no_genexpr)
    got = {(f.firstlineno, f.qualname.rsplit(".", 1)[-1]): f.calls
           for f in functions_of(profile, workloads).values()}
    assert result == expected_result
    assert got == expected
    assert got[(workloads.fib.__code__.co_firstlineno, "fib")] == 465  # fib(12) calls


def test_call_counts_equal_py_start_events_with_generators_and_async():
    with Listener(["PY_START"], WORKLOADS) as listener:
        workloads.balanced_workload()
    expected = {}
    for (qualname, _offset, _event), count in listener.counts.items():
        expected[qualname] = expected.get(qualname, 0) + count
    profile, _ = traced(workloads.balanced_workload)
    got = {name: f.calls for name, f in functions_of(profile, workloads).items() if f.calls}
    assert got == expected


def first_counted_offset(code, start, end):
    """The first instruction of a block that INSTRUCTION events report
    (RESUME and END_FOR get none)."""
    for instr in dis.get_instructions(code):
        if start <= instr.offset <= end and instr.opname not in ("RESUME", "END_FOR", "CACHE"):
            return instr.offset
    return None


def check_block_hits(function, *args):
    with Listener(["INSTRUCTION"], WORKLOADS) as listener:
        expected_result = function(*args)
    executed = {(q, off): n for (q, off, _), n in listener.counts.items()}
    profile, result = traced(function, *args)
    assert result == expected_result
    codes = code_objects(workloads)
    blocks = [b for b in profile.blocks if b.filename == WORKLOADS]
    assert blocks
    covered = set()
    for block in blocks:
        code = codes[block.qualname]
        offset = first_counted_offset(code, block.start_offset, block.end_offset)
        if offset is not None:
            assert block.hits == executed.get((block.qualname, offset), 0), block
        covered.update((block.qualname, i.offset) for i in dis.get_instructions(code)
                       if block.start_offset <= i.offset <= block.end_offset)
    # Every instruction that ran lies in a block Ocular reported.
    missing = [key for key in executed if key not in covered]
    assert not missing
    return profile


def test_block_hits_equal_an_independent_instruction_count():
    profile = check_block_hits(workloads.branchy, 60)
    assert profile.unattributed_cycles == 0 or profile.unattributed_cycles < 0.05 * profile.total_cycles


def test_block_hits_with_exceptions_generators_and_calls():
    check_block_hits(workloads.exceptions, 30)
    check_block_hits(workloads.mixed_no_genexpr)
    check_block_hits(workloads.generators)


def test_no_site_exceeds_the_threshold():
    def run():
        return [workloads.mixed_no_genexpr() for _ in range(30)]

    expected = run()
    full, _ = traced(run, threshold=0)
    profile, result = traced(run, threshold=25, sample_interval_ms=None)
    assert result == expected
    assert profile.sites and max(site.hits for site in profile.sites) <= 25
    assert sum(site.disabled for site in profile.sites) == profile.disabled_sites > 0
    assert all(f.calls <= 25 for f in profile.functions)
    assert functions_of(profile, workloads)["fib"].calls == 25
    # DISABLE really stops delivery: far fewer events than with threshold 0.
    assert profile.events < full.events / 5


def test_a_second_start_rearms_disabled_sites():
    def run():
        for _ in range(100):
            workloads.empty()

    for _ in range(2):
        profile, _ = traced(run, threshold=5, sample_interval_ms=None)
        assert functions_of(profile, workloads)["empty"].calls == 5


def test_sites_disable_again_after_another_tools_restart_events():
    def run():
        for _ in range(100):
            workloads.empty()
        sys.monitoring.restart_events()  # another tool re-arms every site
        for _ in range(100):
            workloads.empty()

    profile, _ = traced(run, threshold=5, sample_interval_ms=None)
    assert functions_of(profile, workloads)["empty"].calls == 5
    assert max(site.hits for site in profile.sites) <= 5


def test_threads_are_traced_and_merged():
    import threading

    single, _ = traced(workloads.mixed_no_genexpr)

    def run():
        threads = [threading.Thread(target=workloads.mixed_no_genexpr) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    profile, _ = traced(run)
    one = {n: f.calls for n, f in functions_of(single, workloads).items()}
    four = {n: f.calls for n, f in functions_of(profile, workloads).items()}
    assert four == {n: 4 * c for n, c in one.items()}
    assert profile.lost_frames == 0


def test_filters():
    profile, _ = traced(workloads.mixed_no_genexpr, exclude=["fib"])
    names = set(functions_of(profile, workloads))
    assert "fib" not in names and "loops" in names
    profile, _ = traced(workloads.mixed_no_genexpr, include_only=["Shape"])
    assert {f.qualname for f in profile.functions} == {"Shape.__init__", "Shape.area", "Shape.unit", "Shape.of"}
    profile, _ = traced(workloads.mixed_no_genexpr, include_only=["workloads"])  # module name
    assert {f.filename for f in profile.functions} == {WORKLOADS}
    profile, _ = traced(workloads.mixed_no_genexpr, include_only=[])
    assert profile.functions == () and profile.blocks == ()
    profile, _ = traced(workloads.mixed_no_genexpr, exclude=[WORKLOADS])  # filename
    assert not functions_of(profile, workloads)
