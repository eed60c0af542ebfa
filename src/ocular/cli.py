"""The command line: run a program under Ocular, or read a saved profile.

    python -m ocular [options] script.py [args...]
    python -m ocular [options] -m module [args...]
    python -m ocular [options] -c code [args...]
    python -m ocular report SAVED [--sort KEY] [--report N] [--thread T]
    python -m ocular annotate SAVED TARGET
    python -m ocular merge OUTPUT TRACE [TRACE...]

(`ocular` is the same command.) The program runs as `__main__` with the
sys.argv, sys.path[0], __file__, __spec__ and __loader__ that `python` gives
it; everything after the script, -m module or -c code is the program's. Its
exit code, SystemExit and uncaught exceptions (traceback, exit 1; exit by
SIGINT for KeyboardInterrupt) are as without Ocular; the profile is saved,
exported and reported (on stderr) first. Arguments are checked before
anything is hooked: a bad option or value is a usage error (exit 2), and so is
a program that cannot be found.

The program's code is run from this module (Ocular's own code, which it never
traces), not through runpy, so no runner frame appears in the profile.
"""

import argparse
import builtins
import importlib.machinery
import importlib.util
import io
import linecache
import marshal
import os
import sys
import threading
import types
import zipfile

import ocular

from ._report import SORTS

_OWN_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _prog():
    argv0 = sys.argv[0] if sys.argv else ""
    return "ocular" if os.path.basename(argv0) == "ocular" else "python -m ocular"


# ---- option values ---------------------------------------------------------------


def _whole(low, high=None):
    """argparse type: a whole number in [low, high]."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"{low} or more"
            raise argparse.ArgumentTypeError(f"must be {bound}, not {value}")
        return value

    return parse


def _writable(text):
    """argparse type: a file path whose directory exists (checked before the run,
    so that the program's work is not lost at the end), made absolute (the
    program may change directory)."""
    path = os.path.abspath(text)
    if not os.path.isdir(os.path.dirname(path)):
        raise argparse.ArgumentTypeError(f"directory {os.path.dirname(path)} does not exist")
    return path


def _trace_path(text):
    base = text[:-3] if text.endswith(".gz") else text
    if not base.endswith(ocular.TRACE_SUFFIXES):
        raise argparse.ArgumentTypeError(
            f"must end in one of {', '.join(ocular.TRACE_SUFFIXES)} (optionally .gz), not {text!r}")
    return _writable(text)


def _add_report_options(group):
    group.add_argument("--report", type=_whole(0), default=15, metavar="N",
                       help="rows per table in the report (default %(default)s)")
    group.add_argument("--limit", type=_whole(0), dest="report", metavar="N", help="the same as --report")
    group.add_argument("--sort", choices=SORTS, default="self",
                       help="order of the tables: self time, inclusive time, calls or hits (default self)")
    group.add_argument("--thread", metavar="ID|NAME",
                       help="report one thread alone, named by native id or name (see the Threads table)")


def _add_export_options(group):
    from .export import FORMATS

    for name, (_module, help_text) in sorted(FORMATS.items()):
        group.add_argument(f"--{name.replace('_', '-')}", dest=f"export_{name}", metavar="PATH",
                           type=_writable, help=f"also write the profile as {name}: {help_text}")


def _exports(options):
    from .export import FORMATS

    return [(name, getattr(options, f"export_{name}")) for name in sorted(FORMATS)
            if getattr(options, f"export_{name}", None)]


# ---- the run command's arguments -----------------------------------------------------

_USAGE = """%(prog)s [options] script.py [args...]
       %(prog)s [options] -m module [args...]
       %(prog)s [options] -c code [args...]
       %(prog)s report SAVED [--sort KEY] [--report N] [--thread T] [--callers F] [--callees F]
       %(prog)s annotate SAVED TARGET
       %(prog)s merge OUTPUT TRACE [TRACE...]"""


def _run_parser(prog):
    parser = argparse.ArgumentParser(
        prog=prog, usage=_USAGE, allow_abbrev=False,
        description="Run a Python program under Ocular and report where its cycles went "
                    "(per function, basic block, line and, in precise mode, instruction).",
        epilog="Everything after the script, -m module or -c code is passed to the program. "
               f"'{prog} report SAVED' and '{prog} annotate SAVED TARGET' read a profile saved "
               f"with --save; '{prog} merge OUTPUT TRACE...' makes one trace of several processes' "
               "(see their --help).")
    program = parser.add_argument_group("the program (one of)")
    program.add_argument("script", nargs="?", metavar="script.py",
                         help="a Python file, or a directory or zip file with a __main__.py")
    program.add_argument("-m", dest="module", metavar="MODULE", help="run library module MODULE as a script")
    program.add_argument("-c", dest="code", metavar="CODE", help="run the program passed in as a string")
    trace = parser.add_argument_group("tracing (the options of ocular.start_tracing)")
    trace.add_argument("--mode", choices=ocular.MODES, default="adaptive",
                       help="adaptive: cycles per basic block; precise: per bytecode instruction")
    trace.add_argument("--threshold", type=_whole(0, 0xFFFFFFFF), default=500, metavar="N",
                       help="hits per site before it is de-instrumented (default %(default)s; 0 = trace all)")
    trace.add_argument("--exclude", action="append", metavar="TEXT",
                       help="do not trace code whose file, module or qualified name contains TEXT (repeatable)")
    trace.add_argument("--include-only", action="append", metavar="TEXT",
                       help="trace only code whose file, module or qualified name contains TEXT (repeatable)")
    trace.add_argument("-o", "--output", type=_trace_path, default="ocular_trace.json", metavar="PATH",
                       help="trace file: .json, .pftrace or .perfetto-trace, optionally .gz (default %(default)s)")
    trace.add_argument("--no-trace", action="store_true", help="write no trace file")
    trace.add_argument("--subprocesses", action="store_true",
                       help="profile child processes too; each saves its profile (and trace) beside the "
                            "trace, and their traces are merged into STEM.merged.SUFFIX")
    trace.add_argument("--max-buffer-mb", type=_whole(1, getattr(ocular, "MAX_BUFFER_MB", 1 << 20)),
                       default=256, metavar="MB",
                       help="memory bound of the trace buffers (default 256); past it trace events are dropped")
    results = parser.add_argument_group("results")
    _add_report_options(results)
    results.add_argument("--quiet", action="store_true", help="print no report (still saves and exports)")
    results.add_argument("--save", type=_writable, metavar="PATH",
                         help="save the profile (JSON; gzipped if PATH ends in .gz) for report and annotate")
    _add_export_options(results)
    parser.add_argument("--version", action="version", version=f"ocular {ocular.__version__}",
                        help="print Ocular's version and exit")
    return parser


def _split(parser, argv):
    """(Ocular's options, the program: (kind, value) or None, the program's
    arguments). The program starts at the first word that is not an option
    or an option's value, or at -m / -c; everything after it is the program's,
    options of the same names included."""
    takes_value = {option for action in parser._actions if action.nargs != 0
                   for option in action.option_strings}
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--":
            rest = argv[i + 1:]
            return argv[:i], ("script", rest[0]) if rest else None, rest[1:]
        if token in ("-m", "-c"):
            if i + 1 == len(argv):
                parser.error(f"argument {token}: expected one argument")
            return argv[:i], (token[1], argv[i + 1]), argv[i + 2:]
        if token[:2] in ("-m", "-c") and not token.startswith("--"):
            return argv[:i], (token[1], token[2:]), argv[i + 1:]
        if token.startswith("-") and token != "-":
            # "--name VALUE" and "-o VALUE" take the next word; "--name=VALUE"
            # and "-oVALUE" carry their value.
            i += 2 if token in takes_value else 1
            continue
        return argv[:i], ("script", token), argv[i + 1:]
    return argv, None, []


# ---- finding the program (before anything is hooked) -------------------------------------


class _Program:
    """What to run and how `python` would have set up for it."""

    def __init__(self, argv, path0, module_globals, code=None, module=None):
        self.argv = argv
        self.path0 = path0
        self.globals = module_globals
        self.code = code
        self.module = module  # -m: resolved while tracing, as python imports its parents then


class _NotRun(Exception):
    """The program could not start (python's message for it)."""


def _main_globals(**names):
    main = {"__name__": "__main__", "__doc__": None, "__package__": None, "__loader__": None,
            "__spec__": None, "__builtins__": builtins}
    if "__annotations__" in getattr(sys.modules.get("__main__"), "__dict__", {}):
        main["__annotations__"] = {}  # as the interpreter's own __main__ starts
    main.update(names)
    return main


def _cannot_open(parser, prog, path, error):
    parser.exit(2, f"{prog}: error: can't open file {os.path.abspath(path)!r}: "
                   f"[Errno {error.errno}] {error.strerror}\n")


def _importer_program(parser, prog, path, args):
    """A directory or zip file with a __main__ module, run as python runs it."""
    location = os.path.abspath(path)
    spec = importlib.machinery.PathFinder.find_spec("__main__", [location])
    if spec is None or spec.loader is None:
        parser.exit(2, f"{prog}: error: can't find '__main__' module in {location!r}\n")
    code = spec.loader.get_code("__main__")
    names = {"__file__": spec.origin, "__cached__": spec.cached, "__loader__": spec.loader,
             "__package__": "", "__spec__": spec}
    return _Program([path, *args], location, _main_globals(**names), code)


def _script_program(parser, prog, path, args):
    if not os.path.exists(path):
        _cannot_open(parser, prog, path, FileNotFoundError(2, "No such file or directory"))
    if os.path.isdir(path) or zipfile.is_zipfile(path):
        return _importer_program(parser, prog, path, args)
    filename = os.path.abspath(path)
    try:
        with io.open_code(path) as file:
            data = file.read()
    except OSError as error:
        _cannot_open(parser, prog, path, error)
    if data[:4] == importlib.util.MAGIC_NUMBER:  # a .pyc file, as python runs one
        code = marshal.loads(memoryview(data)[16:])
        loader = importlib.machinery.SourcelessFileLoader("__main__", filename)
    else:
        code = compile(data, filename, "exec", dont_inherit=True)
        loader = importlib.machinery.SourceFileLoader("__main__", filename)
    names = {"__file__": filename, "__cached__": None, "__loader__": loader}
    return _Program([path, *args], os.path.dirname(os.path.realpath(path)), _main_globals(**names), code)


def _module_program(parser, prog, name, args):
    top = name.partition(".")[0]
    if not name or name.startswith(".") or not top.isidentifier():
        parser.exit(2, f"{prog}: error: -m needs a module name, not {name!r}\n")
    # Only the top-level name is looked up now (that imports nothing): finding
    # a submodule imports its parents, the program's work, done while tracing.
    saved_path = sys.path[:]
    if not sys.flags.safe_path:
        sys.path[:1] = [os.getcwd()]
    try:
        found = importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        found = True  # let the run report it as python does
    finally:
        sys.path[:] = saved_path
    if not found:
        parser.exit(2, f"{prog}: error: no module named {top!r}\n")
    return _Program(["-m", *args], os.getcwd(), None, module=name)


def _code_program(code, args):
    compiled = compile(code, "<string>", "exec", dont_inherit=True)
    if sys.version_info >= (3, 13):  # python -c keeps the code's lines for tracebacks since 3.13
        linecache.cache["<string>"] = (len(code), None, [line + "\n" for line in code.splitlines()],
                                       "<string>")
    names = {"__loader__": importlib.machinery.BuiltinImporter}
    return _Program(["-c", *args], "", _main_globals(**names), compiled)


def _program(parser, prog, target, args):
    """The program to run; SyntaxError as compile raises it."""
    kind, value = target
    if kind == "m":
        return _module_program(parser, prog, value, args)
    if kind == "c":
        return _code_program(value, args)
    if value == "-":
        parser.error("reading the program from stdin (-) is not supported: save it to a file")
    return _script_program(parser, prog, value, args)


# ---- running it ---------------------------------------------------------------------------


def _resolve_module(program):
    """Find -m's module as python does (importing its parents), set argv[0]."""
    name = program.module
    try:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations is not None:
            package, spec = name, importlib.util.find_spec(name + ".__main__")
            if spec is None:
                raise _NotRun(f"No module named {package}.__main__; {package!r} is a package and "
                              "cannot be directly executed")
        if spec is None:
            raise _NotRun(f"No module named {name}")
        code = spec.loader.get_code(spec.name) if spec.loader is not None else None
    except ImportError as error:
        raise _NotRun(f"Error while finding module specification for {name!r} "
                      f"({type(error).__name__}: {error})") from None
    if code is None:
        raise _NotRun(f"No code object available for {name}")
    program.code = code
    program.globals = _main_globals(__file__=spec.origin if spec.has_location else None,
                                    __cached__=spec.cached, __loader__=spec.loader,
                                    __package__=spec.parent, __spec__=spec)
    sys.argv[0] = spec.origin


def _execute(program):
    if program.module is not None:
        _resolve_module(program)
    main = types.ModuleType("__main__")
    main.__dict__.update(program.globals)
    sys.modules["__main__"] = main
    exec(program.code, main.__dict__)


def _join_program_threads():
    """Wait for the program's non-daemon threads while still tracing, as the
    interpreter waits for them before it exits. sys._current_frames() runs
    no Python code: a program without threads sees none of this in its profile."""
    if len(sys._current_frames()) <= 1:
        return
    try:
        for thread in threading.enumerate():
            if thread is not threading.current_thread() and not thread.daemon:
                thread.join()
    except KeyboardInterrupt:
        pass


def _program_traceback(tb):
    """The traceback without this module's frames: it starts at the program's."""
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_OWN_DIR):
        tb = tb.tb_next
    return tb


def _say(text, stream=None):
    """Print to stderr (or `stream`) whatever the program did to it."""
    stream = stream or sys.stderr or sys.__stderr__
    try:
        print(text, file=stream, flush=True)
    except (OSError, ValueError, AttributeError):
        pass


def _deliver(profile, options, prog, quiet, report, stream=None):
    """Save, export and print the profile (`report()` gives the text); True if
    all of it worked."""
    ok = True
    if getattr(options, "save", None):
        try:
            profile.save(options.save)
            if not quiet:
                _say(f"{prog}: profile saved to {options.save}")
        except (OSError, ValueError, TypeError) as error:
            _say(f"{prog}: error: {error}")
            ok = False
    for name, path in _exports(options):
        try:
            profile.export(name, path, quiet=quiet)  # --quiet silences an export's progress too
            if not quiet:
                _say(f"{prog}: {name} written to {path}")
        except Exception as error:  # an exporter's failure must not hide the report
            _say(f"{prog}: error: could not write {name} to {path}: {error}")
            ok = False
    if not quiet:
        try:
            text = report()
        except (TypeError, ValueError) as error:
            _say(f"{prog}: error: {error}")
            return False
        try:
            (sys.stdout or sys.__stdout__).flush()
        except (OSError, ValueError, AttributeError):
            pass
        _say(text.rstrip("\n"), stream)
    return ok


def _reraise_interrupt(interrupt, tb):
    """Leave as python does on an uncaught KeyboardInterrupt (its traceback,
    then exit by SIGINT), with the program's traceback rather than ours."""
    original = sys.excepthook

    def hook(kind, value, value_tb):
        sys.excepthook = original
        if value is interrupt:  # the default hook prints value.__traceback__
            value_tb = tb
            value.with_traceback(tb)
        original(kind, value, value_tb)

    sys.excepthook = hook
    raise interrupt


def _run(parser, prog, argv):
    option_words, target, args = _split(parser, argv)
    options = parser.parse_args(option_words)
    if target is None:
        parser.error("no program given: name a script, -m module or -c code")
    try:
        program = _program(parser, prog, target, args)
    except (SyntaxError, ValueError) as error:  # as python reports it; nothing ran, so no profile
        sys.excepthook(type(error), error.with_traceback(None), None)
        return 1
    sys.argv = program.argv
    if not sys.flags.safe_path:
        sys.path[:1] = [program.path0]
    try:
        ocular.start_tracing(mode=options.mode, perfetto=not options.no_trace,
                             deinstrument_threshold=options.threshold, exclude=options.exclude,
                             include_only=options.include_only, output=options.output,
                             max_buffer_mb=options.max_buffer_mb, subprocesses=options.subprocesses)
    except (TypeError, ValueError, RuntimeError, OSError) as error:
        parser.exit(2, f"{prog}: error: cannot start tracing: {error}\n")
    outcome = None
    caller_main = sys.modules.get("__main__")
    try:
        _execute(program)
    except BaseException as error:  # the program's; re-raised or reported below
        outcome = error
    if not isinstance(outcome, KeyboardInterrupt):
        _join_program_threads()
    # Called in-process (tests, notebooks), the caller's __main__ comes back:
    # multiprocessing's spawn would otherwise re-run the program's file in
    # every child it starts later.
    if caller_main is not None:
        sys.modules["__main__"] = caller_main
    profile = ocular.stop_tracing()
    if profile is None:
        _say(f"{prog}: the program stopped Ocular's trace itself: no profile")
        ok = False
    else:
        ok = _deliver(profile, options, prog, options.quiet,
                      lambda: profile.report(options.report, sort=options.sort, thread=options.thread))
        if options.subprocesses and profile.subprocesses:
            ok = _merge_family(profile, prog, options.quiet) and ok
    if isinstance(outcome, SystemExit):
        raise outcome
    if isinstance(outcome, _NotRun):
        _say(f"{sys.executable}: {outcome}")
        return 1
    if isinstance(outcome, KeyboardInterrupt):
        _reraise_interrupt(outcome, _program_traceback(outcome.__traceback__))
    if outcome is not None:
        tb = _program_traceback(outcome.__traceback__)
        sys.excepthook(type(outcome), outcome.with_traceback(tb), tb)
        return 1
    return 0 if ok else 1


def _merge_family(profile, prog, quiet):
    """One trace of the run's and its children's (--subprocesses)."""
    from .subprocesses import family_traces

    traces, merged = family_traces(profile)
    if len(traces) < 2:
        return True
    try:
        processes = ocular.merge_traces(merged, traces)
    except (OSError, ValueError) as error:
        _say(f"{prog}: error: could not merge the processes' traces into {merged}: {error}")
        return False
    if not quiet:
        _say(f"{prog}: the traces of {processes} processes merged into {merged}")
    return True


# ---- report, annotate and merge: saved files ------------------------------------------------


def _load(parser, prog, path):
    try:
        return ocular.load(path)
    except (OSError, ValueError) as error:
        parser.exit(2, f"{prog}: error: {error}\n")


def _report_command(prog, argv):
    parser = argparse.ArgumentParser(prog=f"{prog} report", allow_abbrev=False,
                                     description="Print the report of a saved profile (no rerun).")
    parser.add_argument("saved", metavar="SAVED", help="a profile saved with --save or Profile.save()")
    _add_report_options(parser)
    parser.add_argument("--callers", action="append", metavar="FUNCTION",
                        help="print who called FUNCTION (qualname, FILE:qualname or FILE:LINE) "
                             "instead of the report (repeatable)")
    parser.add_argument("--callees", action="append", metavar="FUNCTION",
                        help="print what FUNCTION called instead of the report (repeatable)")
    parser.add_argument("--quiet", action="store_true", help="print nothing (only export)")
    _add_export_options(parser)
    options = parser.parse_args(argv)
    profile = _load(parser, prog, options.saved)
    try:  # a --thread or function the profile does not have is a usage error
        if options.callers or options.callees:
            views = [profile.report_callers(f, options.report, thread=options.thread)
                     for f in options.callers or ()]
            views += [profile.report_callees(f, options.report, thread=options.thread)
                      for f in options.callees or ()]
            text = "\n".join(views)
        else:
            text = profile.report(options.report, sort=options.sort, thread=options.thread)
    except (TypeError, ValueError) as error:
        parser.exit(2, f"{prog} report: error: {error}\n")
    return 0 if _deliver(profile, options, prog, options.quiet, lambda: text, sys.stdout) else 1


def _annotate_command(prog, argv):
    parser = argparse.ArgumentParser(prog=f"{prog} annotate", allow_abbrev=False,
                                     description="Print a function's or a file's source with its figures.")
    parser.add_argument("saved", metavar="SAVED", help="a profile saved with --save or Profile.save()")
    parser.add_argument("target", metavar="TARGET",
                        help="a function (qualname, FILE:qualname or FILE:LINE) or a source file")
    options = parser.parse_args(argv)
    profile = _load(parser, prog, options.saved)
    try:
        text = profile.annotate(options.target)
    except (TypeError, ValueError) as error:
        parser.exit(2, f"{prog} annotate: error: {error}\n")
    _say(text.rstrip("\n"), sys.stdout)
    return 0


def _merge_command(prog, argv):
    parser = argparse.ArgumentParser(
        prog=f"{prog} merge", allow_abbrev=False,
        description="Write one trace holding every process of several Ocular traces (a run with "
                    "--subprocesses and its children's), all Perfetto or all Chrome JSON.")
    parser.add_argument("output", metavar="OUTPUT", help="the merged trace (.json, .pftrace or .perfetto-trace, "
                                                         "optionally .gz)")
    parser.add_argument("traces", metavar="TRACE", nargs="+", help="a trace Ocular wrote")
    options = parser.parse_args(argv)
    try:
        processes = ocular.merge_traces(options.output, options.traces)
    except (OSError, ValueError) as error:
        parser.exit(2, f"{prog} merge: error: {error}\n")
    _say(f"{prog}: the traces of {processes} process{'es' if processes != 1 else ''} merged into "
         f"{options.output}", sys.stdout)
    return 0


# A program file named like one of these is run as ./report, say.
_SUBCOMMANDS = {"report": _report_command, "annotate": _annotate_command, "merge": _merge_command}


def main(argv=None):
    """The `ocular` command; returns the exit status (or raises the program's SystemExit)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = _prog()
    subcommand = _SUBCOMMANDS.get(argv[0]) if argv else None
    if subcommand is not None:
        return subcommand(prog, argv[1:])
    return _run(_run_parser(prog), prog, argv)
