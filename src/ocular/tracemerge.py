"""One trace of several processes: the parent's trace and its children's
(start_tracing(subprocesses=True), the command line's --subprocesses), so that
one Perfetto or Chrome view shows every process on its own track.

    ocular.merge_traces("all.pftrace", ["run.pftrace", "run.1a2b-4242.pftrace"])
    python -m ocular merge all.pftrace run.pftrace run.1a2b-4242.pftrace

Each process's trace already has tracks of its own (its process and thread
track uuids are made from its pid) and timestamps on one clock, CLOCK_MONOTONIC,
so merging is mostly concatenation. Two things are per file and are rewritten:

- Perfetto: the packet sequence ids. Every Ocular trace numbers its sequences
  1, 2, 3... and a sequence's interned names and incremental clock belong to
  it, so two files sharing sequence 2 would read as one writer that reset its
  state. The merged file gives each (file, sequence) a number of its own.
  The `ocular.cycles` extension is declared once: a later file's identical
  ExtensionDescriptor packet is left out.
- Chrome JSON: one array, the files' events in order (each carries its pid).

A file cut short (a child killed mid-write) gives its events up to the last
complete one, as Perfetto reads it. Two inputs of one pid (a pid the system
reused between two children) would share tracks: that is refused.
"""

import gzip
import os

from . import TRACE_SUFFIXES
from .export._protowire import varint

_PROTO_SUFFIXES = (".pftrace", ".perfetto-trace")
_PACKET_TAG = 0x0A               # Trace.packet, length-delimited
_SEQUENCE_TAG = 0x50             # TracePacket.trusted_packet_sequence_id, varint
_EXTENSION_FIELD = 72            # TracePacket.extension_descriptor
_PROCESS_DESCRIPTOR = 60         # TracePacket.track_descriptor


def _format(path, argument):
    name = path[:-3] if path.endswith(".gz") else path
    if not name.endswith(TRACE_SUFFIXES):
        raise ValueError(f"{argument} must end in one of {', '.join(TRACE_SUFFIXES)} "
                         f"(optionally .gz), not {path!r}")
    return "proto" if name.endswith(_PROTO_SUFFIXES) else "json"


def _read(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        try:
            return f.read()
        except (EOFError, gzip.BadGzipFile) as error:   # a .gz cut short
            raise ValueError(f"{path}: {error}") from None


def merge_traces(output, traces):
    """Write to `output` one trace holding every process of `traces` (paths
    of Ocular traces, all Perfetto or all Chrome JSON, like `output`).
    -> the number of processes merged."""
    if not isinstance(output, (str, os.PathLike)):
        raise TypeError(f"output must be a path, not {type(output).__name__}")
    if isinstance(traces, (str, bytes, os.PathLike)) or not hasattr(traces, "__iter__"):
        raise TypeError(f"traces must be a list of paths, not {type(traces).__name__}")
    output = os.fspath(output)
    kind = _format(output, "output")
    paths = []
    for trace in traces:
        if not isinstance(trace, (str, os.PathLike)):
            raise TypeError(f"traces must hold paths, not {type(trace).__name__}")
        path = os.fspath(trace)
        if _format(path, "each of traces") != kind:
            raise ValueError(f"traces and output must be of one format: {path!r} is not "
                             f"{'Perfetto' if kind == 'proto' else 'Chrome JSON'} like {output!r}")
        if os.path.abspath(path) == os.path.abspath(output):
            raise ValueError(f"output {output!r} is also one of traces")
        paths.append(path)
    if not paths:
        raise ValueError("traces must name at least one trace")
    parts = [_read(path) for path in paths]
    merged, pids = (_merge_proto if kind == "proto" else _merge_json)(paths, parts)
    opener = gzip.open if output.endswith(".gz") else open
    with opener(output, "wb") as f:
        f.write(merged)
    return len(pids)


# ---- Chrome JSON -----------------------------------------------------------------


def _merge_json(paths, parts):
    import json

    events, pids = [], {}
    for path, data in zip(paths, parts):
        text = data.decode("utf-8", errors="replace").strip()
        if not text.startswith("["):
            raise ValueError(f"{path}: not a Chrome JSON trace (no opening '[')")
        own = set()
        # Ocular writes one event per line; a file cut short ends in part of one.
        for line in text[1:].split("\n"):
            line = line.strip().rstrip(",")
            if line in ("", "]"):
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and "pid" in event:
                own.add(event["pid"])
            events.append(line)
        _claim(pids, own, path)
    return ("[\n" + ",\n".join(events) + "\n]\n").encode("utf-8"), pids


def _claim(pids, own, path):
    for pid in own:
        if pid in pids:
            raise ValueError(f"{path} and {pids[pid]} are both of pid {pid} (a reused pid): "
                             "their tracks would be one; merge them separately")
        pids[pid] = path


# ---- Perfetto protobuf -------------------------------------------------------------


def _varint(data, pos):
    value = shift = 0
    while True:
        if pos >= len(data):
            raise IndexError(pos)
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(packet):
    """(field number, wire type, start of the field, start of its value (a
    length-delimited one's bytes, after the length), end)."""
    pos = 0
    while pos < len(packet):
        key, value_at = _varint(packet, pos)
        wire = key & 7
        if wire == 0:
            _, end = _varint(packet, value_at)
        elif wire == 2:
            length, value_at = _varint(packet, value_at)   # the value after its length
            end = value_at + length
        elif wire == 1:
            end = value_at + 8
        elif wire == 5:
            end = value_at + 4
        else:
            raise ValueError(f"wire type {wire}")
        if end > len(packet):
            raise IndexError(end)
        yield key >> 3, wire, pos, value_at, end
        pos = end


def _packets(path, data):
    pos = 0
    while pos < len(data):
        if data[pos] != _PACKET_TAG:
            raise ValueError(f"{path}: not a Perfetto trace (byte {pos} is not a packet)")
        try:
            length, start = _varint(data, pos + 1)
        except IndexError:
            return                      # cut inside a packet's length
        if start + length > len(data):
            return                      # cut inside a packet
        yield data[start:start + length]
        pos = start + length


def _process_pid(packet, fields):
    """The pid of a process TrackDescriptor packet (its `fields`), else None."""
    for number, wire, _, value_at, end in fields:
        if number == _PROCESS_DESCRIPTOR and wire == 2:
            track = packet[value_at:end]
            for inner, iwire, _, ivalue, iend in _fields(track):
                if inner == 3 and iwire == 2:           # TrackDescriptor.process
                    descriptor = track[ivalue:iend]
                    for field, fwire, _, fvalue, _ in _fields(descriptor):
                        if field == 1 and fwire == 0:   # ProcessDescriptor.pid
                            return _varint(descriptor, fvalue)[0]
    return None


def _merge_proto(paths, parts):
    out, pids, extensions = [], {}, set()
    sequences = {}                  # (file index, its sequence id) -> merged id
    for index, (path, data) in enumerate(zip(paths, parts)):
        own = set()
        for packet in _packets(path, data):
            try:
                fields = list(_fields(packet))
            except (IndexError, ValueError):
                raise ValueError(f"{path}: a packet that is not protobuf") from None
            if len(fields) == 1 and fields[0][0] == _EXTENSION_FIELD:
                if packet in extensions:
                    continue            # declared by an earlier file
                extensions.add(packet)
            pid = _process_pid(packet, fields)
            if pid is not None:
                own.add(pid)
            for number, wire, start, value_at, end in fields:
                if number == _SEQUENCE_TAG >> 3 and wire == 0:
                    old = _varint(packet, value_at)[0]
                    new = sequences.setdefault((index, old), len(sequences) + 1)
                    packet = packet[:start] + bytes([_SEQUENCE_TAG]) + varint(new) + packet[end:]
                    break
            out.append(bytes([_PACKET_TAG]) + varint(len(packet)) + packet)
        _claim(pids, own, path)
    return b"".join(out), pids
