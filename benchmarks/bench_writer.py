"""Throughput of the trace writer (buffers.c, writer.c, json.c, pftrace.c,
sink.c), without the engine: the C harness (tests/c/trace_harness.c, mode
`throughput`) records N block slices (inside functions of 20 blocks, 500
distinct block names) from one producer thread, then trace_close() waits for the writer to finish.

The whole process is pinned to one CPU, so the figure is what one core does,
producer included (the producer costs ~2 ns a record). Time runs from the
first record to trace_close's return, file I/O included.

    python benchmarks/bench_writer.py [--slices N] [--dir DIR]

Prints a markdown table. Targets: JSON >= 5 M events/s; protobuf >= 10 M
events/s and <= 30 B per block slice (BEGIN+END)."""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENGINE = ROOT / 'src' / 'ocular' / '_engine'
SOURCES = [ROOT / 'tests' / 'c' / 'trace_harness.c'] + [
    ENGINE / f for f in ('clock.c', 'buffers.c', 'writer.c', 'json.c', 'pftrace.c', 'sink.c')]


def build(out_dir):
    gcc = shutil.which('gcc') or sys.exit('gcc is required')
    exe = Path(out_dir) / 'trace_harness'
    subprocess.run([gcc, '-std=c11', '-D_GNU_SOURCE', '-O2', '-Wall', '-Wextra', f'-I{ENGINE}',
                    *map(str, SOURCES), '-lz', '-lpthread', '-o', str(exe)], check=True)
    return exe


def one_cpu():
    cpu = min(os.sched_getaffinity(0))
    return lambda: os.sched_setaffinity(0, {cpu})


def measure(exe, path, slices, repeats):
    best = None
    for _ in range(repeats):
        out = subprocess.run([str(exe), 'throughput', str(path), str(slices)], check=True,
                             capture_output=True, text=True, preexec_fn=one_cpu())
        result = json.loads(out.stdout)
        assert result['close_rc'] == 0, result
        assert result['stats']['events_dropped'] == 0, result
        if best is None or result['total_s'] < best['total_s']:
            best = result
        path.unlink()
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--slices', type=int, default=5_000_000)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--dir', default=None, help='where the trace files go (default: a temp dir)')
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as build_dir:
        exe = build(build_dir)
        out_dir = Path(args.dir or build_dir)
        rows = []
        for label, suffix in [('JSON', '.json'), ('JSON + gzip 1', '.json.gz'),
                              ('protobuf', '.pftrace'), ('protobuf + gzip 1', '.pftrace.gz')]:
            r = measure(exe, out_dir / f'bench{suffix}', args.slices, args.repeats)
            events = r['records']
            rows.append((label, events, r['total_s'], events / r['total_s'] / 1e6,
                         r['stats']['bytes_written'] / events,
                         r['stats']['bytes_written'] / r['block_slices']))
    print(f'{args.slices:,} block slices ({rows[0][1]:,} events: BEGIN/END records), one CPU, '
          f'best of {args.repeats}\n')
    print('| format | events | time (s) | M events/s | bytes/event | bytes/block slice |')
    print('|---|---:|---:|---:|---:|---:|')
    for label, events, secs, rate, per_event, per_slice in rows:
        print(f'| {label} | {events:,} | {secs:.3f} | {rate:.1f} | {per_event:.1f} | {per_slice:.1f} |')


if __name__ == '__main__':
    main()
