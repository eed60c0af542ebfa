"""What every exporter does around its format: check its arguments before it
touches anything, write the file (an I/O failure is an OSError naming the
path, and leaves no half-written file behind), and say on stderr how far it
got when an export takes longer than a second.
"""

import contextlib
import os
import sys
import time
import types

# Read through the module at every call, so a test can stand in a clock that
# runs faster than the export.
clock = time.monotonic
PROGRESS_AFTER_S = 1.0  # quiet below this: most exports take milliseconds
PROGRESS_EVERY_S = 1.0


def flag(name, value):
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, not {type(value).__name__}")


def choice(*valid):
    def check(name, value):
        if not isinstance(value, str) or value not in valid:
            raise ValueError(f"{name} must be one of {', '.join(map(repr, valid))}, not {value!r}")

    return check


def callback(name, value):
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be None or a callable taking one str, not {type(value).__name__}")


# Options every format takes: quiet silences the progress lines, progress
# receives them instead of stderr (a notebook, a log).
COMMON = {"quiet": (False, flag), "progress": (None, callback)}


def arguments(format_name, path, options, **allowed):
    """Check `path` and `options` against `allowed` (name=(default, check));
    return (path as str, options as attributes, defaults filled in)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, not {type(path).__name__}")
    path = os.fspath(path)
    if not isinstance(path, str):
        raise TypeError(f"path must be a str path, not {type(path).__name__}")
    known = {**COMMON, **allowed}
    for name in options:
        if name not in known:
            raise TypeError(f"to_{format_name}() got an unknown option {name!r}; "
                            f"valid options: {', '.join(sorted(known))}")
    settings = {}
    for name, (default, check) in known.items():
        if name in options:
            check(name, options[name])
        settings[name] = options.get(name, default)
    return path, types.SimpleNamespace(**settings)


@contextlib.contextmanager
def output_file(path, format_name, binary=True):
    """The open file at `path`. Opened first, so that a path that cannot be
    written fails before the work of building the export; removed again if
    anything fails before the export is complete."""
    try:
        handle = open(path, "wb" if binary else "w", encoding=None if binary else "utf-8")
    except OSError as error:
        raise OSError(error.errno, f"cannot write the {format_name} export: {error.strerror}", path) from error
    try:
        with handle:
            yield handle
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(path)
        if isinstance(error, OSError) and error.filename is None:
            raise OSError(error.errno, f"cannot write the {format_name} export: {error.strerror}",
                          path) from error
        raise


class Progress:
    """Progress lines on stderr (or to `settings.progress`), only once the
    export has taken longer than PROGRESS_AFTER_S, then every PROGRESS_EVERY_S."""

    def __init__(self, settings, format_name, path):
        self.quiet = settings.quiet
        self.sink = settings.progress
        self.what = f"ocular: {format_name} export to {path}"
        self.started = clock()
        self.next_at = self.started + PROGRESS_AFTER_S
        self.spoke = False

    def say(self, text):
        if self.quiet:
            return
        self.spoke = True
        line = f"{self.what}: {text}"
        if self.sink is not None:
            self.sink(line)
        else:
            print(line, file=sys.stderr, flush=True)

    def step(self, stage, done, total=None):
        """Cheap unless a line is due: call it as often as convenient."""
        now = clock()
        if now < self.next_at:
            return
        self.next_at = now + PROGRESS_EVERY_S
        if total:
            self.say(f"{stage} {done:,} of {total:,} ({100 * done // total}%)")
        else:
            self.say(f"{stage} {done:,}")

    def finish(self, summary):
        """The closing line, said only where progress was shown."""
        if self.spoke:
            self.say(f"done, {summary}, in {clock() - self.started:.1f} s")
