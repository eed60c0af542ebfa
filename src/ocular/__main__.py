"""python -m ocular [options] script.py [args...]: run a script under Ocular
and print where its cycles went."""

import argparse
import os
import runpy
import sys

import ocular


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m ocular", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=ocular.MODES, default="adaptive")
    parser.add_argument("--threshold", type=int, default=500,
                        help="hits per site before it is de-instrumented (0 = trace everything)")
    parser.add_argument("--output", default="ocular_trace.json",
                        help="trace file (.json, .pftrace, .perfetto-trace, optionally .gz)")
    parser.add_argument("--no-trace", action="store_true", help="do not write a trace file")
    parser.add_argument("--exclude", action="append", help="substring of code to skip (repeatable)")
    parser.add_argument("--include-only", action="append", help="trace only matching code (repeatable)")
    parser.add_argument("--limit", type=int, default=15, help="rows per table in the report")
    parser.add_argument("script")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    options = parser.parse_args(argv)

    sys.argv = [options.script, *options.args]
    sys.path.insert(0, os.path.dirname(os.path.abspath(options.script)))
    ocular.start_tracing(mode=options.mode, perfetto=not options.no_trace,
                         deinstrument_threshold=options.threshold, exclude=options.exclude,
                         include_only=options.include_only, output=options.output)
    try:
        runpy.run_path(options.script, run_name="__main__")
    finally:
        profile = ocular.stop_tracing()
        if profile is not None:
            print(profile.report(options.limit), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
