"""profile.save / ocular.load: the round trip is exact, and anything that is
not a profile Ocular wrote is refused with a ValueError that says why."""

import dataclasses
import gzip
import json

import pytest

import ocular
import workloads
from ocular import saved
from ocular._calibration import Calibration, KindCost
from ocular._profile import Deferred
from conftest import in_threads, traced


def threaded_run():
    in_threads(workloads.mixed_no_genexpr, 2, names=["worker-0", "worker-1"])
    workloads.precise_mix()


def precise_run():
    workloads.precise_mix()
    workloads.loops(3000)  # runs on past the threshold: CPython specialises its instructions


@pytest.fixture(scope="module")
def profiles(tmp_path_factory):
    trace = tmp_path_factory.mktemp("trace") / "t.pftrace"
    return {
        "adaptive, threads, trace": traced(threaded_run, perfetto=True, output=str(trace))[0],
        "precise": traced(precise_run, mode="precise", threshold=20, sample_interval_ms=None)[0],
        "threshold 5": traced(threaded_run, threshold=5, sample_interval_ms=None)[0],
        "sampled": traced(threaded_run, threshold=500, sample_interval_ms=5)[0],
    }


def same_types(a, b, where="profile"):
    """Equality of values can hide a type that changed (1 == 1.0 == True): check them too.
    (stop_tracing's instructions are a Deferred tuple, and load gives the tuple.)"""
    a, b = (tuple(x) if isinstance(x, Deferred) else x for x in (a, b))
    assert type(a) is type(b), where
    if dataclasses.is_dataclass(a):
        for field in dataclasses.fields(a):
            same_types(getattr(a, field.name), getattr(b, field.name), f"{where}.{field.name}")
    elif isinstance(a, (tuple, list)):
        for i, (x, y) in enumerate(zip(a, b)):
            same_types(x, y, f"{where}[{i}]")
    elif isinstance(a, dict):
        for key in a:
            same_types(a[key], b[key], f"{where}[{key!r}]")


@pytest.mark.parametrize("suffix", [".json", ".json.gz"])
def test_round_trip_is_exact(profiles, tmp_path, suffix):
    for name, profile in profiles.items():
        path = tmp_path / f"p{suffix}"
        profile.save(path)
        loaded = ocular.load(path)
        assert loaded == profile, name
        same_types(profile, loaded)
        assert isinstance(loaded.calibration, Calibration)
        assert all(isinstance(cost, KindCost) for cost in loaded.calibration.costs.values())
        # the views built on the data agree too
        assert loaded.report() == profile.report()
        assert loaded.edges and loaded.threads[0].edges
    data = (tmp_path / f"p{suffix}").read_bytes()
    if suffix.endswith(".gz"):
        data = gzip.decompress(data)
    assert json.loads(data)["format"] == "ocular.profile"  # plain JSON inside


def test_what_the_profiles_hold(profiles):
    adaptive = profiles["adaptive, threads, trace"]
    assert len(adaptive.threads) == 3 and adaptive.trace_path and adaptive.trace_events
    assert any(i.specialized for i in profiles["precise"].instructions)
    assert profiles["threshold 5"].disabled_sites


def test_every_field_is_in_the_document(profiles):
    profile = profiles["adaptive, threads, trace"]
    document = saved.to_document(profile)
    assert document["format"] == "ocular.profile" and document["version"] == saved.VERSION
    body = document["profile"]
    assert set(body) == {f.name for f in dataclasses.fields(ocular.Profile)}
    assert body["functions"]["fields"] == [f.name for f in dataclasses.fields(ocular.FunctionStats)]
    assert set(body["calibration"]) == {f.name for f in dataclasses.fields(Calibration)}
    assert len(body["_edges"]["rows"]) == len(profile.edges)


def test_a_field_missing_from_an_older_file_takes_its_default(profiles, tmp_path):
    profile = profiles["precise"]
    document = saved.to_document(profile)
    del document["profile"]["trace_error"]
    del document["profile"]["calibration"]["duration_ms"]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(document))
    loaded = ocular.load(path)
    assert loaded.trace_error is None and loaded.calibration.duration_ms == 0.0
    assert loaded.functions == profile.functions


@pytest.fixture(scope="module")
def good_document(profiles):
    return saved.to_document(profiles["adaptive, threads, trace"])


def changed(document, change):
    copy = json.loads(json.dumps(document))
    change(copy)
    return json.dumps(copy).encode()


def set_path(*keys_and_value):
    *keys, value = keys_and_value

    def change(document):
        target = document
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return change


def raw(document, keys, text):
    """The document with the value at `keys` written as `text`, as is."""
    marker = "RAW-VALUE-MARKER"
    return changed(document, set_path(*keys, marker)).replace(f'"{marker}"'.encode(), text)


def delete(*keys):
    def change(document):
        target = document
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]

    return change


CORRUPT = {
    "not JSON": (lambda d: b"hello, world", "not JSON"),
    "empty": (lambda d: b"", "truncated"),
    "binary": (lambda d: b"\xff\xfe\x00garbage", "UTF-8"),
    "foreign JSON": (lambda d: b'{"traceEvents": []}', "not an Ocular profile"),
    "a JSON list": (lambda d: b"[1, 2, 3]", "not an Ocular profile"),
    "newer version": (lambda d: changed(d, set_path("version", 2)), "newer"),
    "bad version": (lambda d: changed(d, set_path("version", "1")), "version"),
    "a string for an int": (lambda d: changed(d, set_path("profile", "events", "12")), "expected int"),
    "a bool for an int": (lambda d: changed(d, set_path("profile", "events", True)), "expected int"),
    "a float for an int": (lambda d: changed(d, set_path("profile", "events", 1.5)), "expected int"),
    "a huge number": (lambda d: changed(d, set_path("profile", "events", 10**30)), "out of range"),
    "too many digits": (lambda d: raw(d, ("profile", "events"), b"9" * 5000), "not JSON"),
    "an infinite float": (lambda d: raw(d, ("profile", "tsc_hz"), b"1e999"), "out of range"),
    "NaN": (lambda d: raw(d, ("profile", "tsc_hz"), b"NaN"), "not a number"),
    "deep nesting": (lambda d: b"[" * 200000 + b"]" * 200000, "nested too deeply"),
    "nesting where a number goes": (lambda d: changed(d, set_path("profile", "events", [[[[[1]]]]])),
                                    "expected int"),
    "an unknown field": (lambda d: changed(d, set_path("profile", "sneaky", 1)), "unknown field"),
    "a missing field": (lambda d: changed(d, delete("profile", "mode")), "missing"),
    "a table of the wrong shape": (lambda d: changed(d, set_path("profile", "functions", {"rows": []})),
                                   "table"),
    "a short row": (lambda d: changed(d, lambda doc: doc["profile"]["functions"]["rows"][0].pop()),
                    "values"),
    "a field renamed in a table": (lambda d: changed(d, lambda doc: doc["profile"]["functions"]["fields"]
                                                     .__setitem__(0, "file")), "unknown field"),
    "an edge to no function": (lambda d: changed(d, lambda doc: doc["profile"]["_edges"]["rows"][0]
                                                 .__setitem__(1, 10**6)), "index"),
    "an object for a record list": (lambda d: changed(d, set_path("profile", "threads", {"a": 1})), "table"),
    "a list for the calibration": (lambda d: changed(d, set_path("profile", "calibration", [1])), "object"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_a_file_that_is_not_a_profile_raises_value_error(good_document, tmp_path, case):
    make, words = CORRUPT[case]
    path = tmp_path / "bad.json"
    path.write_bytes(make(good_document))
    with pytest.raises(ValueError) as excinfo:
        ocular.load(path)
    message = str(excinfo.value)
    assert str(path) in message and words in message, message


def test_a_truncated_file_raises_value_error(profiles, tmp_path):
    for suffix in (".json", ".json.gz"):
        path = tmp_path / f"p{suffix}"
        profiles["precise"].save(path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(ValueError, match="truncated"):
            ocular.load(path)
    path.write_bytes(b"\x1f\x8b" + b"not gzip at all")
    with pytest.raises(ValueError, match="gzip"):
        ocular.load(path)
    path.write_bytes(gzip.compress(b'{"format": "something else"}'))
    with pytest.raises(ValueError, match="not an Ocular profile"):
        ocular.load(path)


def test_io_errors_are_os_errors_naming_the_path(profiles, tmp_path):
    missing = tmp_path / "missing.json"
    with pytest.raises(OSError, match="missing.json"):
        ocular.load(missing)
    with pytest.raises(OSError, match="no/such/dir"):
        profiles["precise"].save(tmp_path / "no" / "such" / "dir" / "p.json")
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind
    with pytest.raises(TypeError, match="path"):
        ocular.load(42)


def test_saving_replaces_a_file_whole(profiles, tmp_path):
    path = tmp_path / "p.json"
    path.write_text("old contents")
    profiles["precise"].save(path)
    assert ocular.load(path) == profiles["precise"]
    assert [p.name for p in tmp_path.iterdir()] == ["p.json"]
