"""Size of real .pftrace files: each workload of workloads.py traced at
threshold 0 (adaptive), in bytes per slice and per block slice (the function
slices' bytes included, as in bench_writer.py's synthetic stream).

    python benchmarks/trace_size.py [--dir DIR]

Slice counts are the writer's (Profile.trace_block_slices and
trace_function_slices)."""
import argparse
import os
import tempfile

import ocular
from workloads import WORKLOADS


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--dir', default=None, help='where the traces go (default: a temp dir)')
    args = parser.parse_args()
    print('| workload | trace bytes | block slices | function slices | bytes/slice | bytes/block slice |')
    print('|---|---:|---:|---:|---:|---:|')
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        for name, function in WORKLOADS.items():
            path = os.path.join(directory, name + '.pftrace')
            ocular.start_tracing(mode='adaptive', perfetto=True, deinstrument_threshold=0, output=path)
            function()
            profile = ocular.stop_tracing()
            size = os.path.getsize(path)
            os.unlink(path)
            blocks, functions = profile.trace_block_slices, profile.trace_function_slices
            note = f' ({profile.dropped_events:,} records dropped)' if profile.dropped_events else ''
            print(f'| {name}{note} | {size:,} | {blocks:,} | {functions:,} | '
                  f'{size / (blocks + functions):.1f} | {size / blocks:.1f} |')


if __name__ == '__main__':
    main()
