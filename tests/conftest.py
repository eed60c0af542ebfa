import sys
import threading

import pytest

import ocular


@pytest.fixture(autouse=True)
def never_left_tracing():
    """Every test starts and ends with Ocular stopped and its tool id free."""
    assert not ocular.is_tracing()
    yield
    if ocular.is_tracing():
        ocular.stop_tracing()
        pytest.fail("test left Ocular tracing")
    for tool in ocular.TOOL_IDS:
        assert sys.monitoring.get_tool(tool) != ocular.TOOL_NAME


def traced(function, *args, threshold=0, **options):
    """Run function under Ocular; return (profile, result)."""
    options.setdefault("perfetto", False)
    ocular.start_tracing(deinstrument_threshold=threshold, **options)
    try:
        result = function(*args)
    finally:
        profile = ocular.stop_tracing()
    return profile, result


def in_threads(function, count, *args, names=None):
    """Run function(*args) on `count` new threads at once (named `names`, if given) and wait."""
    threads = [threading.Thread(target=function, args=args, name=names[i] if names else None)
               for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def functions_of(profile, module):
    return {f.qualname: f for f in profile.functions if f.filename == module.__file__}


def code_objects(module):
    """Every code object defined in a module, by qualified name."""
    found = {}
    pending = [module.__loader__.get_code(module.__name__)]
    while pending:
        code = pending.pop()
        found[code.co_qualname] = code
        pending.extend(c for c in code.co_consts if hasattr(c, "co_code"))
    return found


class Listener:
    """An independent, pure-Python sys.monitoring counter on its own tool id."""

    def __init__(self, event_names, filename):
        self.events = [getattr(sys.monitoring.events, name) for name in event_names]
        self.filename = filename
        self.counts = {}

    def __enter__(self):
        self.tool = next(t for t in (3, 4, 1) if sys.monitoring.get_tool(t) is None)
        sys.monitoring.use_tool_id(self.tool, "test-listener")
        for event in self.events:
            sys.monitoring.register_callback(self.tool, event, self._make_callback(event))
        sys.monitoring.set_events(self.tool, sum(self.events))
        sys.monitoring.restart_events()
        return self

    def _make_callback(self, event):
        counts, filename = self.counts, self.filename

        def callback(code, offset, *rest):
            if code.co_filename == filename:
                key = (code.co_qualname, offset, event)
                counts[key] = counts.get(key, 0) + 1

        return callback

    def __exit__(self, *exc):
        sys.monitoring.set_events(self.tool, 0)
        for event in self.events:
            sys.monitoring.register_callback(self.tool, event, None)
        sys.monitoring.free_tool_id(self.tool)
        sys.monitoring.restart_events()
