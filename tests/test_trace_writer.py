"""The trace-export pipeline (buffers.c, writer.c, json.c, pftrace.c, sink.c),
driven by the C harness tests/c/trace_harness.c without the engine. Needs gcc
and zlib's headers; the protobuf checks need the PyPI `perfetto` and
`protobuf`."""
import errno
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import tracecheck as tc  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ENGINE = ROOT / 'src' / 'ocular' / '_engine'
SOURCES = [ROOT / 'tests' / 'c' / 'trace_harness.c'] + [
    ENGINE / f for f in ('clock.c', 'buffers.c', 'writer.c', 'json.c', 'pftrace.c', 'sink.c')]
CFLAGS = ['-std=c11', '-D_GNU_SOURCE', '-Wall', '-Wextra', '-Werror', '-O1', '-g']


@pytest.fixture(scope='module')
def harness(tmp_path_factory):
    gcc = shutil.which('gcc')
    assert gcc, 'gcc is required to build the trace harness'
    exe = tmp_path_factory.mktemp('harness') / 'trace_harness'
    subprocess.run([gcc, *CFLAGS, f'-I{ENGINE}', *map(str, SOURCES), '-lz', '-lpthread',
                    '-o', str(exe)], check=True)
    return exe


def run(harness, *args, timeout=120):
    out = subprocess.run([str(harness), *map(str, args)], capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture(scope='module')
def runs(harness, tmp_path_factory):
    """One run per output format, same seed: identical record streams."""
    d = tmp_path_factory.mktemp('runs')
    return {suffix: (d / f'trace{suffix}', run(harness, 'nested', d / f'trace{suffix}', 7))
            for suffix in ('.json', '.pftrace', '.json.gz', '.perfetto-trace.gz')}


def load(path, tolerant=False):
    return tc.load(path, tolerant)


def check_against_truth(trace, truth):
    assert truth['close_rc'] == 0 and truth['stats']['error_errno'] == 0
    assert truth['stats']['events_dropped'] == 0
    assert truth['stats']['events_written'] == sum(t['records'] for t in truth['threads'])
    assert trace.pid == truth['pid']
    for thread in truth['threads']:
        tid = thread['tid']
        assert tc.count_slices(trace, track=('thread', tid)) == thread['slices'], tid
        assert tc.count_slices(trace, track=('insn', tid)) == thread['insns'], tid
        assert tc.max_depth(trace) >= thread['max_depth'] - 1


@pytest.mark.parametrize('suffix', ['.json', '.pftrace'])
def test_counts_equal_ground_truth(runs, suffix):
    path, truth = runs[suffix]
    check_against_truth(load(path), truth)


def test_json_is_strict_and_complete(runs):
    path, _ = runs['.json']
    text = path.read_text('utf-8')
    assert text.startswith('[{"') and text.endswith('\n]\n')
    events = json.loads(text, parse_constant=lambda c: pytest.fail(c))
    assert all(isinstance(e, dict) for e in events)
    # ts and dur printed from integer ns: exactly three decimals
    for e in events[:2000]:
        for key in ('ts', 'dur'):
            if key in e:
                assert len(repr(e[key]).split('.')[1]) <= 3
    assert '\\ud8' not in text.lower() and 'NaN' not in text
    # non-ASCII names travel as raw UTF-8, invalid input became U+FFFD
    assert '"name":"emoji_\U0001F600"' in text
    assert 'bad\ufffd\ufffdutf8' in text
    assert '"name":"quote\\"back\\\\slash"' in text
    assert '"name":"ctrl\\u0001\\ttab\\nnl"' in text


def test_json_and_proto_trees_are_equal(runs):
    tree_json = tc.slice_tree(load(runs['.json'][0]))
    tree_proto = tc.slice_tree(load(runs['.pftrace'][0]))
    assert tree_json.keys() == tree_proto.keys()
    for track in tree_json:
        assert tree_json[track] == tree_proto[track], track
    assert sum(len(v) for v in tree_json.values()) > 1000


def test_proto_rejects_unknown_fields(runs, tmp_path):
    data = runs['.pftrace'][0].read_bytes()
    # Append a packet holding an unknown field 1999 (varint 1).
    body = bytes([0xF8, 0xFC, 0x03, 0x01])
    bad = tmp_path / 'bad.pftrace'
    bad.write_bytes(data + bytes([0x0A, len(body)]) + body)
    with pytest.raises(tc.TraceError, match='unknown'):
        tc.load_pftrace(bad)


def test_proto_sequences_and_sizes(runs):
    trace = load(runs['.pftrace'][0])
    assert trace.packets > 1000
    # a proto file is several times smaller than JSON of the same run
    assert runs['.pftrace'][0].stat().st_size * 2.5 < runs['.json'][0].stat().st_size


@pytest.mark.parametrize('suffix', ['.json', '.pftrace'])
def test_threads_on_named_tracks(runs, suffix):
    path, truth = runs[suffix]
    trace = load(path)
    for thread in truth['threads']:
        tid, name = thread['tid'], thread['name']
        assert ('thread', tid) in trace.events
        if name is not None:   # includes the name given only at close
            assert trace.thread_names[('thread', tid)] == name
            assert trace.thread_names[('insn', tid)] == f'{name} instructions'
        else:
            assert ('thread', tid) not in trace.thread_names
            assert trace.thread_names[('insn', tid)] == f'Thread {tid} instructions'
    assert trace.process_name


@pytest.mark.parametrize('plain,zipped', [('.json', '.json.gz'),
                                          ('.pftrace', '.perfetto-trace.gz')])
def test_gzip_decodes_to_the_same_content(runs, plain, zipped, tmp_path):
    a, b = runs[plain][0], runs[zipped][0]
    assert b.read_bytes()[:2] == b'\x1f\x8b'
    # Buffers of different threads interleave differently from run to run, so
    # the files are compared by content, not byte for byte.
    unzipped = tmp_path / ('unzipped' + plain)
    unzipped.write_bytes(gzip.decompress(b.read_bytes()))
    assert tc.slice_tree(load(a)) == tc.slice_tree(load(unzipped)) == tc.slice_tree(load(b))
    assert runs[zipped][1]['stats']['bytes_written'] == b.stat().st_size


@pytest.mark.parametrize('suffix', ['.json', '.pftrace'])
def test_drops_are_reported(harness, tmp_path, suffix):
    path = tmp_path / f'drop{suffix}'
    truth = run(harness, 'drop', path, 3)
    stats = truth['stats']
    assert truth['close_rc'] == 0
    nulls = sum(t['nulls'] for t in truth['threads'])
    assert stats['events_dropped'] == nulls > 0
    assert stats['events_written'] == sum(t['records'] for t in truth['threads'])
    trace = load(path)
    assert trace.dropped() == nulls
    for thread in truth['threads']:
        track = ('thread', thread['tid'])
        # everything reserved is there, all slices closed where dropping began
        assert tc.count_slices(trace, track=track) == thread['slices']
        marks = [e for e in trace.instants(track) if 'dropped from here' in e.name]
        if not thread['nulls']:  # this thread finished before the limit was reached
            assert not marks
            continue
        assert len(marks) == 1 and marks[0].args['events_dropped'] == thread['nulls']
        ends = [e.ts for e in trace.events[track] if e.ph != 'i']
        assert not ends or marks[0].ts >= max(ends)


@pytest.mark.parametrize('suffix', ['.json', '.pftrace'])
def test_sigkill_leaves_a_loadable_file(harness, tmp_path, suffix):
    path = tmp_path / f'killed{suffix}'
    proc = subprocess.Popen([str(harness), 'kill', str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == 'ready'
        deadline = time.monotonic() + 30
        while (not path.exists() or path.stat().st_size < 3_000_000) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    size = path.stat().st_size
    assert size >= 3_000_000
    if suffix == '.json':
        with pytest.raises(tc.TraceError):
            tc.load_json(path)                      # no closing bracket
    trace = load(path, tolerant=True)
    slices = tc.check_nesting(trace, allow_open=True)
    assert len(slices) > 10_000
    assert tc.count_slices(trace, 'spin', allow_open=True) > 1000


def _event_count(trace):
    return sum(len(evs) for evs in trace.events.values())


@pytest.mark.parametrize('where', ['inside an event', 'between two events'])
def test_cut_json_loads_up_to_last_complete_event(runs, tmp_path, where):
    text = runs['.json'][0].read_bytes()
    whole = _event_count(tc.load_json(runs['.json'][0]))
    start = text.index(b'\n{', len(text) // 2) + 1
    # Inside: a few bytes into the event that starts after the middle.
    # Between: just after the event before it, comma included.
    end = start + 7 if where == 'inside an event' else start
    cut = tmp_path / 'cut.json'
    cut.write_bytes(text[:end])
    trace = tc.load_json(cut, tolerant=True)
    assert trace.truncated
    assert 0 < _event_count(trace) < whole
    tc.check_nesting(trace, allow_open=True)
    with pytest.raises(tc.TraceError):
        tc.load_json(cut)


def test_unwritable_path_fails_open_with_errno(harness, tmp_path):
    missing = tmp_path / 'no' / 'such' / 'dir' / 't.json'
    assert run(harness, 'open', missing) == {'rc': -1, 'errno': errno.ENOENT}
    assert not missing.parent.exists()
    ro = tmp_path / 'ro'
    ro.mkdir()
    ro.chmod(0o500)
    if os.geteuid() != 0:   # root writes anywhere
        assert run(harness, 'open', ro / 't.json') == {'rc': -1, 'errno': errno.EACCES}
    assert run(harness, 'open', tmp_path / 't.txt')['errno'] == errno.EINVAL
    ok = run(harness, 'open', tmp_path / 'fine.pftrace')
    assert ok == {'rc': 0, 'errno': 0}


@pytest.mark.parametrize('suffix', ['.json', '.pftrace.gz'])
def test_write_failure_is_reported_not_fatal(harness, tmp_path, suffix):
    if not os.path.exists('/dev/full'):
        pytest.fail('/dev/full is needed to simulate a full disk')
    link = tmp_path / f'full{suffix}'
    link.symlink_to('/dev/full')
    truth = run(harness, 'nested', link, 5)
    stats = truth['stats']
    assert truth['close_rc'] == -1 and truth['close_errno'] == errno.ENOSPC
    assert stats['error_errno'] == errno.ENOSPC
    assert 'No space left' in stats['error_message']
    assert stats['bytes_written'] == 0
    reserved = sum(t['records'] for t in truth['threads'])
    assert stats['events_written'] + stats['events_dropped'] >= reserved
