"""Profiling a piece of code in place: a context manager and a decorator.

    with ocular.tracing(mode="precise", perfetto=False) as session:
        work()
    print(session.profile.report())

    @ocular.profile(perfetto=False)
    def work(): ...
    work()
    print(work.profile.report())

Both take start_tracing()'s options, checked by name when they are created.
The decorator traces each call on its own and keeps the profile of the most
recent call that finished in `work.profile` (and returns the call's result
unchanged); a call it makes to itself (recursion, on the same thread) is part
of the outer call's trace (so are calls on that thread while it runs, such as
other asyncio tasks awaiting the same decorated coroutine). Neither nests inside a running trace: entering one
while Ocular is tracing raises RuntimeError, since one interpreter has one
trace, and that trace's figures would otherwise be cut in two.
"""

import functools
import inspect
import threading

import ocular  # looked up at call time: this module is imported while ocular's __init__ runs

__all__ = ["tracing", "profile", "TracingSession"]


def _check_options(options, where):
    try:
        inspect.signature(ocular.start_tracing).bind(**options)
    except TypeError as error:
        valid = ", ".join(inspect.signature(ocular.start_tracing).parameters)
        raise TypeError(f"{where}: {error}; the options are start_tracing()'s: {valid}") from None


def _refuse_nesting(where):
    if ocular.is_tracing():
        raise RuntimeError(
            f"{where} cannot start inside a running trace: Ocular is already tracing "
            "(one trace per interpreter). Stop it with ocular.stop_tracing(), or profile "
            "the code inside the running trace instead."
        )


class TracingSession:
    """What `with ocular.tracing(...)` gives: `profile` is None until the
    block ends, then the block's Profile."""

    def __init__(self, options):
        self.options = options
        self.profile = None

    def __enter__(self):
        _refuse_nesting("ocular.tracing()")
        self.profile = None
        ocular.start_tracing(**self.options)
        return self

    def __exit__(self, *exc_info):
        self.profile = ocular.stop_tracing()
        return False  # the block's exception, if any, goes on

    def __repr__(self):
        state = "running" if self.profile is None and ocular.is_tracing() else "done"
        return f"<ocular.TracingSession {state} options={self.options!r}>"


def tracing(**options):
    """A context manager tracing its block with start_tracing(**options)."""
    _check_options(options, "ocular.tracing()")
    return TracingSession(options)


def profile(function=None, /, **options):
    """Decorator: trace each call of the function with start_tracing(**options);
    `function.profile` is the Profile of the latest call that finished.
    Use as @ocular.profile or @ocular.profile(mode="precise", ...)."""
    _check_options(options, "ocular.profile()")
    if function is None:
        return lambda f: _decorate(f, options)
    return _decorate(function, options)


def _decorate(function, options):
    if not callable(function):
        raise TypeError(f"ocular.profile() decorates a function, not {type(function).__name__}")
    if inspect.isgeneratorfunction(function) or inspect.isasyncgenfunction(function):
        raise TypeError(
            f"ocular.profile() cannot profile the generator function {function.__qualname__}: "
            "a call only creates the generator; wrap the loop that consumes it in ocular.tracing()"
        )
    owner = threading.local()  # set on the thread whose call started the trace

    def begin():
        if getattr(owner, "depth", 0):
            owner.depth += 1
            return False
        _refuse_nesting(f"@ocular.profile on {function.__qualname__}")
        ocular.start_tracing(**options)
        owner.depth = 1
        return True

    def end(started):
        owner.depth -= 1
        if started:
            wrapper.profile = ocular.stop_tracing()

    if inspect.iscoroutinefunction(function):
        @functools.wraps(function)
        async def wrapper(*args, **kwargs):
            started = begin()
            try:
                return await function(*args, **kwargs)
            finally:
                end(started)
    else:
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            started = begin()
            try:
                return function(*args, **kwargs)
            finally:
                end(started)

    wrapper.profile = None
    return wrapper
