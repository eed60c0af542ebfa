"""Bad input: every public function, keyword and CLI option, fed wrong types
and values (hypothesis). Only the documented exceptions may come out
(TypeError / ValueError naming the argument, OSError naming the path), and
after a refusal nothing of Ocular stays hooked.

The validity of each value is decided here, by an oracle written from the
documentation, not from the implementation: a call whose values the oracle
accepts must succeed, and a refused call must name an argument the oracle
rejects."""

import contextlib
import io
import os
import pathlib
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ocular
import ocular.__main__
import workloads

FAST = settings(max_examples=40, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
OUT_DIR = pathlib.Path(os.environ.get("TMPDIR", "/tmp")) / f"ocular-fuzz-{os.getpid()}"
MISSING_DIR = OUT_DIR / "missing" / "dir"


def all_events():
    return sys.monitoring._all_events() if hasattr(sys.monitoring, "_all_events") else None


@contextlib.contextmanager
def nothing_left_hooked():
    """The monitoring state after the block is the state before it."""
    events = all_events()
    yield
    assert not ocular.is_tracing()
    assert all(sys.monitoring.get_tool(t) != ocular.TOOL_NAME for t in range(6))
    assert all_events() == events


# ---- start_tracing ---------------------------------------------------------

ANYTHING = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=False),
                     st.text(max_size=8), st.binary(max_size=4), st.lists(st.integers(), max_size=2),
                     st.just(object()))
PATTERNS = st.one_of(st.none(), st.text(max_size=6), st.lists(st.text(max_size=6), max_size=3),
                     st.tuples(st.text(max_size=6)), st.lists(st.one_of(st.text(max_size=4), st.integers(),
                                                                         st.binary(max_size=3)), max_size=3),
                     st.binary(max_size=3), st.integers(), st.floats(allow_nan=False))
SUFFIXES = [".json", ".pftrace", ".perfetto-trace", ".json.gz", ".pftrace.gz", ".txt", ".gz", ""]
OUTPUTS = st.one_of(
    st.sampled_from(SUFFIXES).map(lambda s: str(OUT_DIR / f"t{s}")),
    st.sampled_from(SUFFIXES).map(lambda s: OUT_DIR / f"p{s}"),  # os.PathLike
    st.sampled_from(SUFFIXES[:3]).map(lambda s: str(MISSING_DIR / f"t{s}")),
    st.sampled_from(SUFFIXES[:2]).map(lambda s: os.fsencode(OUT_DIR / f"b{s}")),  # bytes path
    ANYTHING)
KEYWORDS = {
    "mode": st.one_of(st.sampled_from(["adaptive", "precise", "Adaptive", "fast", ""]), ANYTHING),
    "perfetto": st.one_of(st.booleans(), ANYTHING),
    "deinstrument_threshold": st.one_of(st.sampled_from([0, 1, 500, 2**32 - 1, 2**32, -1, 2**64]), ANYTHING),
    "exclude": PATTERNS,
    "include_only": PATTERNS,
    "output": OUTPUTS,
    "max_buffer_mb": st.one_of(st.sampled_from([1, 256, ocular.MAX_BUFFER_MB, ocular.MAX_BUFFER_MB + 1,
                                                0, -1, 2**44 + 1, 2**70]), ANYTHING),
    "subprocesses": st.one_of(st.booleans(), ANYTHING),
}


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _patterns_ok(value):
    if value is None or isinstance(value, str):
        return True
    if isinstance(value, (bytes, bytearray)) or not isinstance(value, (list, tuple)):
        return False
    return all(isinstance(p, str) for p in value)


def rejected(kwargs):
    """{keyword: exception types allowed for it} for every value the
    documentation rules out (output only matters with perfetto=True)."""
    bad = {}
    if kwargs.get("mode", "adaptive") not in ocular.MODES or not isinstance(kwargs.get("mode", ""), str):
        bad["mode"] = (ValueError,)
    perfetto = kwargs.get("perfetto", True)
    if not isinstance(perfetto, bool):
        bad["perfetto"] = (TypeError,)
    threshold = kwargs.get("deinstrument_threshold", 500)
    if not _is_int(threshold) or not 0 <= threshold < 2**32:
        bad["deinstrument_threshold"] = (TypeError, ValueError)
    for name in ("exclude", "include_only"):
        if not _patterns_ok(kwargs.get(name)):
            bad[name] = (TypeError,)
    if not isinstance(kwargs.get("subprocesses", False), bool):
        bad["subprocesses"] = (TypeError,)
    size = kwargs.get("max_buffer_mb", 256)
    if not _is_int(size) or not 1 <= size <= ocular.MAX_BUFFER_MB:
        bad["max_buffer_mb"] = (TypeError, ValueError)
    if perfetto is True:
        output = kwargs.get("output", "ocular_trace.json")
        name = output if isinstance(output, (str, os.PathLike)) else None
        name = os.fspath(name) if name is not None else None
        if not isinstance(name, str):
            bad["output"] = (TypeError,)
        elif not (name[:-3] if name.endswith(".gz") else name).endswith(ocular.TRACE_SUFFIXES):
            bad["output"] = (ValueError,)
        elif name.startswith(str(MISSING_DIR)):
            bad["output"] = (OSError,)
    return bad


@pytest.fixture(scope="module", autouse=True)
def out_dir():
    OUT_DIR.mkdir(exist_ok=True)
    yield
    for path in OUT_DIR.iterdir():
        path.unlink()
    OUT_DIR.rmdir()


@FAST
@given(st.fixed_dictionaries({}, optional=KEYWORDS))
def test_start_tracing_accepts_what_is_documented_and_refuses_the_rest(kwargs):
    bad = rejected(kwargs)
    with nothing_left_hooked():
        try:
            ocular.start_tracing(**kwargs)
        except (TypeError, ValueError, OSError) as error:
            assert bad, f"valid arguments refused: {error!r}"
            message = str(error)
            named = [name for name, kinds in bad.items()
                     if isinstance(error, kinds) and (name in message if name != "output" or
                                                      not isinstance(error, OSError)
                                                      else str(MISSING_DIR) in message)]
            assert named, f"{error!r} names none of {sorted(bad)}"
        else:
            try:
                assert not bad, f"accepted invalid {sorted(bad)}"
                assert workloads.fib(8) == 21
            finally:
                profile = ocular.stop_tracing()
            assert profile is not None and profile.failure is None
        assert "OCULAR_SUBPROCESSES" not in os.environ  # children's set-up undone, whatever happened


def test_start_tracing_refuses_extra_positionals_and_unknown_keywords():
    with nothing_left_hooked():
        with pytest.raises(TypeError, match="positional"):
            ocular.start_tracing("adaptive", False, 0, None, None, "out.json")
        with pytest.raises(TypeError, match="thresold"):
            ocular.start_tracing(thresold=5)
        for function in (ocular.stop_tracing, ocular.is_tracing):
            with pytest.raises(TypeError):
                function(1)
            with pytest.raises(TypeError):
                function(x=1)


# ---- Profile methods -------------------------------------------------------


@pytest.fixture(scope="module")
def profile():
    ocular.start_tracing(perfetto=False, deinstrument_threshold=0)
    try:
        workloads.mixed_no_genexpr()
    finally:
        result = ocular.stop_tracing()
    return result


@FAST
@given(st.one_of(st.integers(-5, 40), st.none(), st.booleans(), st.floats(allow_nan=False),
                 st.text(max_size=3), st.just([3])))
def test_report_limit(profile, limit):
    valid = limit is None or (_is_int(limit) and limit >= 0)
    try:
        text = profile.report(limit)
    except (TypeError, ValueError) as error:
        assert not valid and "limit" in str(error)
    else:
        assert valid and "Hottest functions" in text


@FAST
@given(st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.none(),
                 st.booleans(), st.text(max_size=3), st.just(1j)))
def test_cycles_to_ns(profile, cycles):
    valid = isinstance(cycles, (int, float)) and not isinstance(cycles, bool)
    try:
        ns = profile.cycles_to_ns(cycles)
    except TypeError as error:
        assert not valid and "cycles" in str(error)
    else:
        assert valid and ns == pytest.approx(cycles * 1e9 / profile.tsc_hz)


@FAST
@given(st.one_of(ANYTHING, st.sampled_from([len, workloads.fib.__code__, workloads.Shape.area,
                                            ocular.FunctionStats("x.py", "nowhere", 1, 0, 0)])))
def test_callers_and_callees_name_their_target(profile, target):
    for method in (profile.callers, profile.callees):
        try:
            method(target)
        except TypeError as error:
            assert "target" in str(error)
        except ValueError as error:  # a function or code object this profile does not hold
            assert "not in this profile" in str(error)
    assert profile.callers(workloads.fib)  # a function that ran has callers
    assert workloads.fib.__code__.co_qualname in {f.qualname for f in profile.callees(workloads.fib)}


@FAST
@given(st.one_of(st.text(max_size=8), ANYTHING), st.one_of(st.text(max_size=8), ANYTHING))
def test_export_refuses_unknown_formats_by_name(profile, name, path):
    from ocular.export import FORMATS

    if isinstance(name, str) and name in FORMATS:
        return
    with pytest.raises((TypeError, ValueError)) as excinfo:
        profile.export(name, path)
    assert "format" in str(excinfo.value)


# ---- the command line ------------------------------------------------------

SCRIPT = OUT_DIR / "script.py"
WORDS = st.text(alphabet="abcxyz_.", max_size=4)
CLI_VALUES = {
    "--mode": st.sampled_from(["adaptive", "precise", "fast", ""]),
    "--threshold": st.sampled_from(["0", "500", "-1", "x", "1.5", str(2**40)]),
    "--output": st.sampled_from([str(OUT_DIR / "c.pftrace"), str(OUT_DIR / "c.txt"),
                                 str(MISSING_DIR / "c.json")]),
    "--exclude": WORDS,
    "--include-only": WORDS,
    "--limit": st.sampled_from(["0", "3", "-2", "many"]),
}


def cli_rejected(options, no_trace):
    """{option: how it is refused}: 'usage' by argparse (exit 2), or the
    exception start_tracing raises for it (none today: the CLI's own checks
    come first, but the oracle keeps the path open)."""
    bad = {}
    if options.get("--mode", "adaptive") not in ocular.MODES:
        bad["--mode"] = "usage"
    for option in ("--threshold", "--limit"):
        value = options.get(option, "0")
        if not value.isdigit() or (option == "--threshold" and int(value) >= 2**32):
            bad[option] = "usage"
    # The CLI checks the trace path before the program runs (its work would
    # be lost at the end otherwise), whether or not a trace is written.
    output = options["--output"]
    if output.endswith(".txt") or output.startswith(str(MISSING_DIR)):
        bad["--output"] = "usage"
    return bad


@FAST
@given(st.dictionaries(st.sampled_from(sorted(CLI_VALUES)), st.none()).flatmap(
    lambda keys: st.fixed_dictionaries({k: CLI_VALUES[k] for k in keys})), st.booleans())
def test_cli_options(options, no_trace):
    SCRIPT.write_text("total = sum(range(100))\n")
    options.setdefault("--output", str(OUT_DIR / "default.json"))  # never the working directory
    bad = cli_rejected(options, no_trace)
    argv = [part for option, value in options.items() for part in (option, value)]
    argv += ["--no-trace"] * no_trace + [str(SCRIPT)]
    saved = sys.argv[:], sys.path[:]
    stderr = io.StringIO()
    with nothing_left_hooked():
        try:
            with contextlib.redirect_stderr(stderr):
                status = ocular.__main__.main(argv)
        except SystemExit as exit:  # argparse: usage error naming the option
            assert exit.code == 2
            usage = [option for option, how in bad.items() if how == "usage"]
            assert usage and any(option in stderr.getvalue() for option in usage), stderr.getvalue()
        except (TypeError, ValueError, OSError) as error:
            assert "usage" not in bad.values()
            kinds = tuple(how for how in bad.values() if how != "usage")
            assert kinds and isinstance(error, kinds), (error, bad)
            words = {"--threshold": "deinstrument_threshold", "--output": "output"}
            assert any(words[o] in str(error) or str(MISSING_DIR) in str(error) for o in bad), error
        else:
            assert not bad and status == 0 and "Hottest functions" in stderr.getvalue()
        finally:
            sys.argv[:], sys.path[:] = saved
