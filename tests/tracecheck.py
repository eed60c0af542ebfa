"""tracecheck - offline validation of Ocular's trace files.

Loads a Chrome JSON trace (array form) or a Perfetto protobuf trace, each
optionally gzipped, into one format-neutral `Trace`, then replays the nesting
rules of Perfetto's importers and rebuilds a slice tree per track, so that the
JSON and the protobuf output of one run can be compared with each other and
with a ground truth.

    trace = load_json(path, tolerant=False)   # or load_pftrace(path) / load(path)
    slices = check_nesting(trace)             # raises TraceError on a violation
    tree = slice_tree(trace)
    count_slices(trace, name=None, track=None)

Tracks are keyed format-neutrally: ("thread", tid), ("insn", tid) for a
thread's instruction lane, ("process", pid). Timestamps are integer ns.

What is checked (reference: trace-formats.md, sections 1.5, 2.4 and 3.4):
 JSON  strict syntax (no NaN/Infinity, no trailing comma, no raw control
       characters, no surrogate \\u escapes); starts with '[{"'; required
       fields per phase; pid/tid in 1..2^32-1; ts/dur finite, >= 0, whole ns.
 proto every packet decodes with the official schema (perfetto_trace_pb2 of
       the PyPI `perfetto` package), extended only by the TrackEvent
       extensions the file itself declares in an ExtensionDescriptor before
       any event (as trace_processor reads them), with no unknown field
       anywhere; non-zero
       sequence ids; the first packet of a sequence clears incremental state;
       interned ids are defined before use on their sequence; every track has
       a descriptor; thread descriptors carry pid and tid.
 both  per track, after Perfetto's sort (ts, then E, then X by longer dur,
       then the rest, then file order): no E without an open slice, no
       partial overlap, no B/E crossing an X, no negative duration, depth
       <= 512, nothing left open (unless allow_open).
"""
from __future__ import annotations

import collections
import decimal
import gzip
import json
import re
from dataclasses import dataclass, field

MAX_DEPTH = 512
INSN_TID_BASE = 1_000_000_000   # json.c: instruction lanes are tid + this


class TraceError(AssertionError):
    """The trace would not load, or would load wrong, in Perfetto."""


@dataclass
class Event:
    ts: int                    # ns
    ph: str                    # 'B', 'E', 'X' or 'i'
    name: str | None = None
    args: dict = field(default_factory=dict)
    dur: int | None = None     # X only
    order: int = 0             # position in the file


@dataclass
class Trace:
    format: str                                   # 'json' or 'proto'
    pid: int | None = None                        # the first process's
    pids: set = field(default_factory=set)        # every process's (several when merged)
    process_name: str | None = None
    thread_names: dict = field(default_factory=dict)    # track -> name
    events: dict = field(default_factory=lambda: collections.defaultdict(list))
    truncated: bool = False                       # tolerant load stopped early
    packets: int = 0                              # proto only

    def instants(self, track=None):
        return [e for key, evs in self.events.items() if track in (None, key)
                for e in evs if e.ph == 'i']

    def dropped(self):
        """The drop count of the run, from the process-wide instant (0 if none)."""
        for e in self.instants():
            if 'in this run' in (e.name or ''):
                return int(e.args['events_dropped'])
        return 0


def _read(path) -> bytes:
    with open(path, 'rb') as f:
        data = f.read()
    if data[:2] == b'\x1f\x8b':
        # Tolerates a truncated stream: returns what decompressed.
        d = __import__('zlib').decompressobj(16 + 15)
        data = d.decompress(data)
    return data


# ---- JSON ----------------------------------------------------------------------

_SURROGATE_ESCAPE = re.compile(r'(?<!\\)(?:\\\\)*\\u[dD][89a-fA-F][0-9a-fA-F]{2}')


def _no_constants(name):
    raise TraceError(f'non-finite number {name} in JSON')


def _parse(text):
    if _SURROGATE_ESCAPE.search(text):
        raise TraceError('surrogate \\u escape (aborts the Perfetto JSON import)')
    try:
        return json.loads(text, parse_float=decimal.Decimal, parse_constant=_no_constants)
    except json.JSONDecodeError as e:
        raise TraceError(f'invalid JSON: {e}') from None


def _ns(value, what):
    if isinstance(value, bool) or not isinstance(value, (int, decimal.Decimal)):
        raise TraceError(f'{what} is not a number: {value!r}')
    ns = decimal.Decimal(value) * 1000
    if ns != ns.to_integral_value():
        raise TraceError(f'{what} {value} is not a whole number of ns')
    if ns < 0:
        raise TraceError(f'{what} {value} is negative')
    return int(ns)


def _u32(ev, key, required=True):
    value = ev.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < 2 ** 32:
        raise TraceError(f'{key} must be an integer in 1..2^32-1 (Perfetto coerces '
                         f'others to 0): {ev}')
    return value


def _json_track(tid):
    return ('insn', tid - INSN_TID_BASE) if tid >= INSN_TID_BASE else ('thread', tid)


def load_json(path, tolerant=False, processes=False) -> Trace:
    """Load a Chrome JSON trace. tolerant=True accepts a file cut anywhere (no
    closing ']', partial last line) up to its last complete event, as
    Perfetto does; otherwise the whole file must be one strict JSON array.
    processes=True accepts several pids (a merged trace)."""
    raw = _read(path)
    try:
        text = raw.decode('utf-8', errors='strict')
    except UnicodeDecodeError as e:
        if not tolerant:
            raise TraceError(f'not UTF-8: {e}') from None
        text = raw[:e.start].decode('utf-8')   # cut inside a character
    if not re.sub(r'\s', '', text[:64]).startswith('[{"'):
        raise TraceError('Perfetto only sniffs JSON starting with [{" (or {")')
    trace = Trace('json')
    if not tolerant:
        events = _parse(text)
        if not isinstance(events, list):
            raise TraceError('not the array form')
    else:
        events = []
        lines = text.split('\n')
        for i, line in enumerate(lines):
            s = line.strip()
            if i == 0:
                s = s[1:]
            if s in ('', ']'):
                continue
            try:
                events.append(_parse(s[:-1] if s.endswith(',') else s))
            except TraceError:
                if any(rest.strip() for rest in lines[i + 1:]):
                    raise
                trace.truncated = True
        # A cut that falls between two events leaves every line whole: the
        # missing closing bracket is then what says the file was cut.
        if not text.rstrip().endswith(']'):
            trace.truncated = True
    for order, ev in enumerate(events):
        _add_json_event(trace, ev, order, processes)
    return trace


def _add_json_event(trace, ev, order, processes):
    if not isinstance(ev, dict):
        raise TraceError(f'event is not an object: {ev!r}')
    if not ev:
        return
    ph = ev.get('ph')
    if not isinstance(ph, str) or not ph:
        raise TraceError(f'event without ph: {ev}')
    pid = _u32(ev, 'pid')
    if trace.pid is None:
        trace.pid = pid
    elif pid != trace.pid and not processes:
        raise TraceError(f'second pid {pid} in one trace')
    trace.pids.add(pid)
    args = ev.get('args', {})
    if not isinstance(args, dict):
        raise TraceError(f'args is not an object: {ev}')
    if ph == 'M':
        name = ev.get('name')
        if name == 'process_name':
            trace.process_name = args['name']
        elif name == 'thread_name':
            trace.thread_names[_json_track(_u32(ev, 'tid'))] = args['name']
        elif name not in ('process_sort_index', 'thread_sort_index'):
            raise TraceError(f'metadata event Perfetto ignores: {ev}')
        return
    if 'ts' not in ev:
        raise TraceError(f'{ph} event without ts: {ev}')
    ts = _ns(ev['ts'], 'ts')
    scope = ev.get('s', 't')
    if ph == 'i' and scope == 'p':
        track = ('process', pid)
    else:
        track = _json_track(_u32(ev, 'tid'))
    name = ev.get('name')
    if ph in ('B', 'X', 'i'):
        if not isinstance(name, str):
            raise TraceError(f'{ph} event without a name: {ev}')
    elif ph == 'E':
        if name is not None or 'cat' in ev:
            raise TraceError(f'E events must carry neither name nor cat: {ev}')
    else:
        raise TraceError(f'phase {ph!r} is not one Ocular writes: {ev}')
    dur = None
    if ph == 'X':
        if 'dur' not in ev:
            raise TraceError(f'X without dur: {ev}')
        dur = _ns(ev['dur'], 'dur')
    args = {k: int(v) if isinstance(v, decimal.Decimal) and v == int(v) else v
            for k, v in args.items()}
    trace.events[track].append(Event(ts, ph, name, args, dur, order))


# ---- protobuf ---------------------------------------------------------------------

def _pb2():
    # The PyPI `perfetto` wheel ships the whole trace schema here.
    from perfetto.protos.perfetto.trace import perfetto_trace_pb2
    return perfetto_trace_pb2


def _unknown_fields(msg, path='packet'):
    from google.protobuf import unknown_fields
    found = []
    if len(unknown_fields.UnknownFieldSet(msg)):
        found.append(path)
    for fd, value in msg.ListFields():
        if fd.message_type is None:
            continue
        items = value if fd.is_repeated else [value]
        for i, item in enumerate(items):
            found += _unknown_fields(item, f'{path}.{fd.name}')
    return found


def _complete_prefix(data, tolerant):
    """Walk the Trace framing (field 1, LEN) without the library, so that a
    truncated tail can be told apart from corruption; return the bytes up to
    the last complete packet."""
    pos, n = 0, len(data)
    while pos < n:
        start = pos
        if data[pos] != 0x0A:
            raise TraceError(f'byte {pos}: top-level field other than Trace.packet')
        pos += 1
        length = shift = 0
        while True:
            if pos >= n:
                if tolerant:
                    return data[:start]
                raise TraceError('truncated packet length')
            b = data[pos]
            pos += 1
            length |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        if pos + length > n:
            if tolerant:
                return data[:start]
            raise TraceError(f'packet at byte {start} runs past the end of the file')
        pos += length
    return data


class _Sequence:
    def __init__(self):
        self.cleared = False
        self.defaults = None
        self.names = {}
        self.ann_names = {}
        self.locations = {}
        self.clock = None          # value of the incremental clock 64
        self.clock_offset = 0      # MONOTONIC minus clock 64, from the snapshot


def _declare_extensions(parsed):
    """Add the TrackEvent extensions of the file's ExtensionDescriptor packets
    to the protobuf pool, as trace_processor does. They must come before the
    first track event, extend TrackEvent only, in its extension range."""
    from google.protobuf import descriptor_pb2, descriptor_pool
    pool = descriptor_pool.Default()
    declared = 0
    for i, packet in enumerate(parsed.packet):
        if packet.HasField('track_event'):
            break
        if not packet.HasField('extension_descriptor'):
            continue
        for file in packet.extension_descriptor.extension_set.file:
            proto = descriptor_pb2.FileDescriptorProto.FromString(file.SerializeToString())
            if proto.message_type or proto.enum_type or proto.service:
                raise TraceError(f'packet {i + 1}: the extension file {proto.name} defines types')
            for ext in proto.extension:
                if ext.extendee != '.perfetto.protos.TrackEvent' or not 1000 <= ext.number < 10000:
                    raise TraceError(f'packet {i + 1}: extension {ext.name} = {ext.number} of {ext.extendee}')
            try:
                known = pool.FindFileByName(proto.name)
            except KeyError:
                pool.Add(proto)
            else:
                if known.serialized_pb != proto.SerializeToString():
                    raise TraceError(f'{proto.name} declared twice, differently')
            declared += len(proto.extension)
    return declared


def load_pftrace(path, tolerant=False, processes=False) -> Trace:
    pb = _pb2()
    trace = Trace('proto')
    data = _read(path)
    prefix = _complete_prefix(data, tolerant)
    trace.truncated = len(prefix) < len(data)
    parsed = pb.Trace.FromString(prefix)
    if _declare_extensions(parsed):
        parsed = pb.Trace.FromString(prefix)   # now with the extensions known
    # Unknown fields survive parsing; discarding them changes the size. Only
    # then walk the packets to say where they are (slow).
    size = parsed.ByteSize()
    checked = pb.Trace()
    checked.CopyFrom(parsed)
    checked.DiscardUnknownFields()
    if checked.ByteSize() != size:
        for i, packet in enumerate(parsed.packet):
            unknown = _unknown_fields(packet)
            if unknown:
                raise TraceError(f'unknown fields in packet {i + 1}: {unknown}')
        raise TraceError('unknown fields')
    sequences = collections.defaultdict(_Sequence)
    descriptors = {}
    pending = []                   # (uuid, Event) until every descriptor is known
    primary_clock = None
    order = 0
    for packet in parsed.packet:
        trace.packets += 1
        seq_id = packet.trusted_packet_sequence_id
        flags = packet.sequence_flags
        if seq_id and seq_id not in sequences and not flags & 1:
            raise TraceError(f'sequence {seq_id}: first packet does not set CLEARED')
        seq = sequences[seq_id]
        if flags & 1:
            if not seq_id:
                raise TraceError('CLEARED on sequence 0')
            if seq.cleared:
                # Ocular's writer clears each sequence once; a second clear is
                # two writers on one sequence id (traces concatenated unmerged).
                raise TraceError(f'sequence {seq_id} CLEARED twice')
            seq.__init__()
            seq.cleared = True
        if packet.HasField('trace_packet_defaults'):
            seq.defaults = packet.trace_packet_defaults
        if packet.HasField('interned_data'):
            if not seq.cleared:
                raise TraceError(f'sequence {seq_id}: interned data before CLEARED is ignored')
            idata = packet.interned_data
            seq.names.update((e.iid, e.name) for e in idata.event_names)
            seq.ann_names.update((e.iid, e.name) for e in idata.debug_annotation_names)
            seq.locations.update((e.iid, e) for e in idata.source_locations)
            for iid in [e.iid for e in idata.event_names] + [e.iid for e in idata.source_locations]:
                if iid == 0:
                    raise TraceError('iid 0 means unset')
        if packet.HasField('clock_snapshot'):
            snap = packet.clock_snapshot
            if snap.primary_trace_clock:
                primary_clock = snap.primary_trace_clock
            clocks = {c.clock_id: c for c in snap.clocks}
            if 64 in clocks:
                if not seq_id:
                    raise TraceError('sequence clock on sequence 0')
                if not clocks[64].is_incremental or 3 not in clocks:
                    raise TraceError('clock 64 must be incremental and anchored to MONOTONIC')
                seq.clock = clocks[64].timestamp
                seq.clock_offset = clocks[3].timestamp - clocks[64].timestamp
            continue
        if packet.HasField('extension_descriptor'):
            continue                   # taken in by _declare_extensions
        if packet.HasField('track_descriptor'):
            td = packet.track_descriptor
            if not td.uuid:
                raise TraceError('track descriptor without uuid')
            if td.HasField('thread') and not (td.thread.pid and td.thread.tid):
                raise TraceError(f'thread descriptor without pid/tid: {td}')
            descriptors[td.uuid] = td
            continue
        if not packet.HasField('track_event'):
            raise TraceError(f'unexpected packet: {packet}')
        clock_id = packet.timestamp_clock_id or (
            seq.defaults.timestamp_clock_id if seq.defaults else 0)
        if clock_id == 64:
            if seq.clock is None:
                raise TraceError(f'sequence {seq_id}: clock 64 used before its snapshot')
            seq.clock += packet.timestamp
            ts = seq.clock + seq.clock_offset
        elif clock_id == 3:
            ts = packet.timestamp
        else:
            raise TraceError(f'timestamp on clock {clock_id}: not one Ocular writes')
        te = packet.track_event
        uuid = te.track_uuid if te.HasField('track_uuid') else (
            seq.defaults.track_event_defaults.track_uuid if seq.defaults else 0)
        if not uuid:
            raise TraceError('track event on the default track 0')
        if te.HasField('name_iid'):
            if te.name_iid not in seq.names:
                raise TraceError(f'sequence {seq_id}: name iid {te.name_iid} not interned')
            name = seq.names[te.name_iid]
        else:
            name = te.name if te.HasField('name') else None
        args = {}
        for ann in te.debug_annotations:
            key = seq.ann_names.get(ann.name_iid) if ann.HasField('name_iid') else ann.name
            if key is None:
                raise TraceError(f'debug annotation name iid {ann.name_iid} not interned')
            args[key] = getattr(ann, ann.WhichOneof('value'))
        # Extension fields become arguments named after the field.
        args.update((fd.name, value) for fd, value in te.ListFields() if fd.is_extension)
        if te.HasField('source_location_iid'):
            loc = seq.locations.get(te.source_location_iid)
            if loc is None:
                raise TraceError(f'source location iid {te.source_location_iid} not interned')
            args.update(file=loc.file_name, line=loc.line_number)
        ph = {1: 'B', 2: 'E', 3: 'i'}.get(te.type)
        if ph is None:
            raise TraceError(f'track event type {te.type}')
        if ph != 'E' and name is None:
            raise TraceError(f'{ph} without a name')
        pending.append((uuid, Event(ts, ph, name, args, None, order)))
        order += 1
    if trace.packets and primary_clock != 3:
        raise TraceError('no ClockSnapshot makes MONOTONIC the trace clock')
    keys = {}
    for uuid, td in descriptors.items():
        if td.HasField('process'):
            if trace.pid is None:
                trace.pid, trace.process_name = td.process.pid, td.process.process_name or None
            elif not processes:
                raise TraceError(f'second process {td.process.pid} in one trace')
            trace.pids.add(td.process.pid)
            keys[uuid] = ('process', td.process.pid)
        elif td.HasField('thread'):
            keys[uuid] = ('thread', td.thread.tid)
            if td.thread.thread_name:
                trace.thread_names[keys[uuid]] = td.thread.thread_name
    for uuid, td in descriptors.items():
        if uuid not in keys:
            parent = descriptors.get(td.parent_uuid)
            if parent is None or not parent.HasField('thread'):
                raise TraceError(f'track {uuid} is neither a thread nor a thread child')
            keys[uuid] = ('insn', parent.thread.tid)
            if td.name:
                trace.thread_names[keys[uuid]] = td.name
    for uuid, ev in pending:
        if uuid not in keys:
            raise TraceError(f'track uuid {uuid} has no TrackDescriptor')
        trace.events[keys[uuid]].append(ev)
    return trace


def load(path, tolerant=False, processes=False) -> Trace:
    name = str(path).removesuffix('.gz')
    if name.endswith('.json'):
        return load_json(path, tolerant, processes)
    return load_pftrace(path, tolerant, processes)


# ---- semantics --------------------------------------------------------------------

@dataclass
class Slice:
    track: tuple
    ts: int
    dur: int | None            # None while open
    depth: int
    name: str
    args: dict
    parent: int | None         # index into the list check_nesting returns
    end_kind: str = ''         # 'E', 'X' or 'i'


def _json_sort_key(ev):
    # Perfetto's JSON sorter: at equal ts, E first, then X by descending dur,
    # then every other phase, then file order.
    rank = 0 if ev.ph == 'E' else 1 if ev.ph == 'X' else 2
    return (ev.ts, rank, -(ev.dur or 0) if ev.ph == 'X' else 0, ev.order)


def _proto_sort_key(ev):
    # Track events at equal ts keep their order in the file.
    return (ev.ts, ev.order)


def check_nesting(trace, allow_open=False):
    """Replay Perfetto's per-track slice stacking; return every slice."""
    slices = []
    for track, events in trace.events.items():
        stack = []                 # indices into slices
        def close_finished(ts):
            while stack and slices[stack[-1]].end_kind == 'X' and \
                    slices[stack[-1]].ts + slices[stack[-1]].dur <= ts:
                stack.pop()
        key = _json_sort_key if trace.format == 'json' else _proto_sort_key
        for ev in sorted(events, key=key):
            close_finished(ev.ts)
            if ev.ph == 'E':
                if not stack:
                    raise TraceError(f'{track}: E at {ev.ts} with no open slice')
                top = slices[stack[-1]]
                if top.end_kind == 'X':
                    raise TraceError(f'{track}: E at {ev.ts} crosses the X slice {top}')
                top.dur = ev.ts - top.ts
                if top.dur < 0:
                    raise TraceError(f'{track}: negative duration {top}')
                top.args.update(ev.args)
                top.end_kind = 'E'
                stack.pop()
                continue
            if stack and slices[stack[-1]].end_kind == 'X' and ev.ph == 'X':
                top = slices[stack[-1]]
                if ev.ts + ev.dur > top.ts + top.dur:
                    raise TraceError(f'{track}: X at {ev.ts} partially overlaps {top}')
            if len(stack) >= MAX_DEPTH:
                raise TraceError(f'{track}: depth > {MAX_DEPTH} at {ev.ts}')
            dur = ev.dur if ev.ph == 'X' else 0 if ev.ph == 'i' else None
            slices.append(Slice(track, ev.ts, dur, len(stack), ev.name, dict(ev.args),
                                stack[-1] if stack else None, ev.ph if ev.ph != 'B' else ''))
            if ev.ph != 'i':
                stack.append(len(slices) - 1)
        open_ = [slices[i] for i in stack if slices[i].end_kind != 'X']
        if open_ and not allow_open:
            raise TraceError(f'{track}: {len(open_)} slices never end, e.g. {open_[-1]}')
    return slices


def slice_tree(trace, arg_keys=('cycles',), allow_open=False):
    """{track: ((name, ts, dur, args, children), ...)} with args restricted to
    arg_keys, for comparing two traces of one run (instants left out)."""
    slices = check_nesting(trace, allow_open)
    children = collections.defaultdict(list)
    for i, s in enumerate(slices):
        if s.end_kind != 'i':
            children[s.parent].append(i)

    def node(i):
        s = slices[i]
        args = tuple(sorted((k, s.args[k]) for k in arg_keys if k in s.args))
        return (s.name, s.ts, s.dur, args, tuple(node(c) for c in children[i]))

    tree = collections.defaultdict(list)
    for i in children[None]:
        tree[slices[i].track].append(node(i))
    return {track: tuple(nodes) for track, nodes in tree.items()}


def count_slices(trace, name=None, track=None, allow_open=False):
    """Slices (instants excluded) by name, or the number named `name`."""
    counts = collections.Counter(
        s.name for s in check_nesting(trace, allow_open)
        if s.end_kind != 'i' and track in (None, s.track))
    return counts if name is None else counts[name]


def max_depth(trace, allow_open=False):
    return max((s.depth for s in check_nesting(trace, allow_open)), default=-1)
