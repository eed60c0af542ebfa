"""IPython and Jupyter: `%load_ext ocular`, then

    %%ocular [options]          profile a cell
    %ocular [options] statement profile one statement

Options are the command line's (`python -m ocular`): --mode, --threshold,
--exclude, --include-only, --limit, --output (a trace file; none unless
asked), plus --html PATH (also write the HTML report), --no-html (text only)
and -r/--return (return the Profile: `profile = %ocular -r f()`).

The report goes under the cell: as text in a terminal, and as the HTML
report (in an isolated iframe) where the frontend shows HTML. A bad option
raises IPython's UsageError, which IPython shows as its message and the
usage line, without a traceback.
"""

import argparse
import html
import os
import re
import shlex

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.display import display

import ocular

from .export import html as html_report

FRAME_HEIGHT_PX = 640


class _HelpShown(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{message}\n{self.format_usage().rstrip()}")

    def exit(self, status=0, message=None):  # only -h/--help gets here
        raise _HelpShown()


def _parser():
    parser = _Parser(prog="%ocular", description="Profile a cell (%%ocular) or a statement (%ocular) with Ocular.")
    parser.add_argument("--mode", choices=ocular.MODES, default="adaptive")
    parser.add_argument("--threshold", type=int, default=500,
                        help="hits per site before it is de-instrumented (0 = trace everything)")
    parser.add_argument("--exclude", action="append", help="substring of code to skip (repeatable)")
    parser.add_argument("--include-only", action="append", help="trace only matching code (repeatable)")
    parser.add_argument("--limit", type=int, default=15, help="rows per table in the text report")
    parser.add_argument("--output", help="also write a trace file (.json, .pftrace, .perfetto-trace, + .gz)")
    parser.add_argument("--html", metavar="PATH", help="also write the HTML report to PATH")
    parser.add_argument("--no-html", action="store_true", help="show the text report only")
    parser.add_argument("-r", "--return", dest="return_profile", action="store_true",
                        help="return the Profile")
    return parser


_WORD = re.compile(r"""("[^"]*"|'[^']*'|\S+)\s*""")


def split_statement(line, parser):
    """(option words, statement) of `%ocular [options] statement`: options are
    read while the line starts with one ('--' ends them), the rest is Python."""
    options = {name: action.nargs != 0 for action in parser._actions for name in action.option_strings}
    words, rest = [], line.strip()
    while rest.startswith("-"):
        match = _WORD.match(rest)
        word = match.group(1)
        if word == "--":
            rest = rest[match.end():]
            break
        if not (word.startswith("--") or word in options):
            break  # `-x + 1` is a statement
        rest = rest[match.end():]
        words.append(word)
        if options.get(word) and rest:  # "--mode precise"; "--mode=precise" is one word
            match = _WORD.match(rest)
            words.append(shlex.split(match.group(1))[0] if match.group(1)[0] in "\"'" else match.group(1))
            rest = rest[match.end():]
    return words, rest


def _iframe(page):
    # srcdoc keeps the report's CSS and script away from the notebook's page.
    return (f'<iframe srcdoc="{html.escape(page, quote=True)}" sandbox="allow-scripts" '
            f'style="width:100%;height:{FRAME_HEIGHT_PX}px;border:1px solid #d9dde5"></iframe>')


@magics_class
class OcularMagics(Magics):
    @line_cell_magic
    def ocular(self, line, cell=None):
        """Profile a cell (%%ocular [options]) or a statement (%ocular [options] statement)."""
        parser = _parser()
        try:
            if cell is None:
                words, source = split_statement(line, parser)
            else:
                try:
                    words, source = shlex.split(line), cell
                except ValueError as error:  # an unclosed quote
                    raise UsageError(f"{error}\n{parser.format_usage().rstrip()}") from None
            options = parser.parse_args(words)
        except _HelpShown:
            print(parser.format_help())
            return None
        if options.limit < 1:
            raise UsageError(f"--limit must be at least 1, not {options.limit}\n" + parser.format_usage().rstrip())
        if options.html and not os.path.isdir(os.path.dirname(os.path.abspath(options.html))):
            raise UsageError(f"--html {options.html}: no such directory {os.path.dirname(os.path.abspath(options.html))}")
        if not source.strip():
            raise UsageError("%ocular needs a statement, as in `%ocular f(x)`, or a cell under %%ocular\n"
                             + parser.format_usage().rstrip())
        return self._profile(options, source)

    def _profile(self, options, source):
        shell = self.shell
        text = shell.transform_cell(source)
        # A file name linecache knows, so that the reports show the cell's lines.
        filename = shell.compile.cache(text, shell.execution_count)
        try:
            code = shell.compile(text, filename, "exec")
        except (SyntaxError, ValueError, OverflowError):  # as IPython shows a cell that does not compile
            shell.showsyntaxerror(filename)
            return None
        namespaces = shell.user_global_ns, shell.user_ns  # read before tracing: they are properties
        try:
            ocular.start_tracing(mode=options.mode, perfetto=options.output is not None,
                                 deinstrument_threshold=options.threshold, exclude=options.exclude,
                                 include_only=options.include_only,
                                 output=options.output if options.output is not None else "ocular_trace.json")
        except (TypeError, ValueError, RuntimeError, OSError) as error:  # before anything is hooked
            raise UsageError(str(error)) from None
        try:
            exec(code, *namespaces)
        finally:
            profile = ocular.stop_tracing()
            if profile is not None:
                self._show(profile, options)
        return profile if options.return_profile else None

    def _show(self, profile, options):
        text = profile.report(options.limit)
        if options.html:
            text += f"HTML report written to {profile.to_html(options.html)}\n"
        bundle = {"text/plain": text}
        if not options.no_html:
            bundle["text/html"] = _iframe(html_report.render(profile))
        display(bundle, raw=True)


def _short_repr(profile, printer, cycle):
    # A Profile's own repr lists every record; `%%ocular -r` would print it all.
    printer.text(f"<ocular.Profile: {profile.mode} mode, threshold {profile.deinstrument_threshold}, "
                 f"{len(profile.functions)} functions, "
                 f"{profile.cycles_to_ns(profile.total_cycles) / 1e6:.3f} ms of program time; "
                 "print(profile) for the report>")


def load_ipython_extension(ipython):
    ipython.register_magics(OcularMagics)
    ipython.display_formatter.formatters["text/plain"].for_type(ocular.Profile, _short_repr)
