"""ocular.tracing() and @ocular.profile: what they trace, what they keep, and
their refusal to nest inside a running trace."""

import asyncio

import pytest

import ocular
import workloads
from conftest import functions_of


def fib_calls(profile):
    return functions_of(profile, workloads)["fib"].calls


def test_tracing_block_gives_its_profile():
    with ocular.tracing(perfetto=False, deinstrument_threshold=0) as session:
        assert ocular.is_tracing() and session.profile is None
        workloads.fib(10)
    assert not ocular.is_tracing()
    assert fib_calls(session.profile) == 177  # fib(10)'s calls
    assert session.profile.deinstrument_threshold == 0


def test_tracing_passes_its_options():
    with ocular.tracing(mode="precise", perfetto=False, include_only="loops") as session:
        workloads.mixed_no_genexpr()
    assert session.profile.mode == "precise"
    assert {f.qualname for f in session.profile.functions} == {"loops"}


def test_tracing_keeps_the_profile_when_the_block_raises():
    with pytest.raises(ZeroDivisionError):
        with ocular.tracing(perfetto=False, deinstrument_threshold=0) as session:
            workloads.fib(5)
            1 / 0
    assert not ocular.is_tracing()
    assert fib_calls(session.profile) == 15


def test_the_decorator_traces_each_call_on_its_own_and_keeps_the_last():
    @ocular.profile(perfetto=False, deinstrument_threshold=0)
    def run(n):
        return workloads.fib(n)

    assert run.profile is None and run.__name__ == "run"
    assert run(8) == 21
    first = run.profile
    assert fib_calls(first) == 67
    assert run(5) == 5
    assert run.profile is not first
    assert fib_calls(run.profile) == 15  # the last call's alone, not added to the first's
    assert not ocular.is_tracing()


def test_the_bare_decorator_and_a_recursive_decorated_function(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # start_tracing's defaults write ocular_trace.json here

    @ocular.profile
    def countdown(n):
        return 0 if n == 0 else 1 + countdown(n - 1)

    assert countdown(30) == 30  # the inner calls run inside the outer call's trace
    assert not ocular.is_tracing()
    calls = {f.qualname.rsplit(".", 1)[-1]: f.calls for f in countdown.profile.functions}
    assert calls["countdown"] == 31
    assert (tmp_path / "ocular_trace.json").exists()


def test_the_decorator_keeps_the_profile_when_the_call_raises():
    @ocular.profile(perfetto=False, deinstrument_threshold=0)
    def broken():
        workloads.fib(5)
        raise KeyError("no")

    with pytest.raises(KeyError):
        broken()
    assert fib_calls(broken.profile) == 15 and not ocular.is_tracing()


def test_the_decorator_on_a_coroutine_function():
    @ocular.profile(perfetto=False, deinstrument_threshold=0)
    async def job():
        await asyncio.sleep(0)
        return workloads.fib(6)

    assert asyncio.run(job()) == 8
    assert fib_calls(job.profile) == 25


def test_neither_nests_inside_a_running_trace():
    @ocular.profile(perfetto=False)
    def inner():
        return 1

    ocular.start_tracing(perfetto=False)
    try:
        with pytest.raises(RuntimeError, match="inside a running trace"):
            with ocular.tracing(perfetto=False):
                pass
        with pytest.raises(RuntimeError, match="inside a running trace.*inner|inner.*inside a running trace"):
            inner()
        assert ocular.is_tracing()  # the running trace is untouched
    finally:
        profile = ocular.stop_tracing()
    assert profile is not None and inner.profile is None
    with ocular.tracing(perfetto=False) as outer:
        with pytest.raises(RuntimeError, match="inside a running trace"):
            with ocular.tracing(perfetto=False):
                pass
    assert outer.profile is not None


def test_bad_options_are_refused_when_created():
    with pytest.raises(TypeError, match="threshold.*deinstrument_threshold"):
        ocular.tracing(threshold=0)
    with pytest.raises(TypeError, match="ocular.profile"):
        ocular.profile(colour="red")
    with pytest.raises(TypeError, match="generator"):
        ocular.profile(workloads.gen)
    with pytest.raises(TypeError, match="decorates a function"):
        ocular.profile()(42)
    with pytest.raises(ValueError, match="mode"):  # a bad value: start_tracing's own check
        with ocular.tracing(mode="fast", perfetto=False):
            pass
    assert not ocular.is_tracing()
