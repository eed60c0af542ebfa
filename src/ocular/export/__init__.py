"""Exporters: one small module per file format, each only reading a Profile.

FORMATS maps a format name to (module name, one line of help). Each module
has `write(profile, path, **options)`. Profile.to_<name>(path) and the CLI's
--<name> PATH options are generated from this table, so a new format is one
module and one line here.
"""

import importlib

FORMATS = {
    # name: (module in ocular.export, help)
    "pstats": ("pstats", "cProfile's pstats file, for snakeviz, tuna, gprof2dot and pstats"),
    "speedscope": ("speedscope", "speedscope JSON (one profile per thread), for speedscope.app"),
    "collapsed": ("collapsed", "collapsed stacks (a;b;c weight), for flamegraph.pl, speedscope and Firefox"),
    "pprof": ("pprof", "gzipped profile.proto, for go tool pprof, Pyroscope and Grafana"),
    "html": ("html", "a self-contained HTML report: source heatmap, function table, flame graph"),
}


def write(name, profile, path, **options):
    if not isinstance(name, str):
        raise TypeError(f"the export format name must be a str, not {type(name).__name__}")
    if name not in FORMATS:
        raise ValueError(f"unknown export format {name!r}; valid: {', '.join(sorted(FORMATS)) or 'none'}")
    module = importlib.import_module(f"{__name__}.{FORMATS[name][0]}")
    return module.write(profile, path, **options)
