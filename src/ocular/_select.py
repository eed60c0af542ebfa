"""Finding a function, a file or a thread of a Profile from what a user has at
hand: a record, a function, a code object, or a name typed on a command line."""

import os
import types

from ._profile import FunctionStats


def _code_of(target):
    if isinstance(target, types.CodeType):
        return target
    target = getattr(target, "__func__", target)  # bound and class methods
    target = getattr(target, "__wrapped__", target)  # functools.wraps decorators
    code = getattr(target, "__code__", None)
    return code if isinstance(code, types.CodeType) else None


def _where(function):
    return f"{function.qualname} ({function.filename}:{function.firstlineno})"


def _one(candidates, what, describe=_where):
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ValueError(f"{what} is not in this profile")
    listed = "; ".join(describe(c) for c in candidates[:6])
    more = f"; and {len(candidates) - 6} more" if len(candidates) > 6 else ""
    raise ValueError(f"{what} is ambiguous: it names {listed}{more}")


def files_named(profile, text):
    """The filenames of `profile` that `text` names: the filename itself, the
    same path made absolute, or a trailing part of it (whole path components)."""
    names = {f.filename for f in profile.functions} | {line.filename for line in profile.lines}
    if text in names:
        return [text]
    absolute = os.path.abspath(text) if text and not text.startswith("<") else None
    if absolute in names:
        return [absolute]
    tail = os.sep + text.lstrip(os.sep)
    return sorted(name for name in names if name.endswith(tail))


def _named(profile, text):
    """`qualname`, a last part of one (`area` for `Shape.area`), `FILE:qualname`
    or `FILE:LINE` (the function whose definition starts on LINE)."""
    functions = profile.functions
    filename, _, rest = text.rpartition(":")
    if filename:
        files = set(files_named(profile, filename))
        in_file = [f for f in functions if f.filename in files]
        if rest.isdigit():
            return _one([f for f in in_file if f.firstlineno == int(rest)], repr(text))
        functions, text = in_file, rest
    exact = [f for f in functions if f.qualname == text]
    if exact:
        return _one(exact, repr(text))
    return _one([f for f in functions if f.qualname.rsplit(".", 1)[-1] == text], repr(text))


def function_of(profile, target):
    """The FunctionStats of `profile` that `target` names: a FunctionStats (of
    this or another profile: matched by filename, qualname and first line), a
    function or method, a code object, or a name (see _named)."""
    if isinstance(target, str):
        return _named(profile, target)
    if isinstance(target, FunctionStats):
        key = (target.filename, target.qualname, target.firstlineno)
    else:
        code = _code_of(target)
        if code is None:
            raise TypeError(
                "target must be a FunctionStats, a function, a code object or a name, "
                f"not {type(target).__name__}"
            )
        key = (code.co_filename, code.co_qualname, code.co_firstlineno)
    for function in profile.functions:
        if (function.filename, function.qualname, function.firstlineno) == key:
            return function
    raise ValueError(f"{key[1]} ({key[0]}:{key[2]}) is not in this profile")


def thread_of(profile, thread):
    """The ThreadStats of `profile` that `thread` names: its native id (an int,
    or a str of digits that is no thread's name) or its name."""
    threads = profile.threads
    if isinstance(thread, bool) or not isinstance(thread, (int, str)):
        raise TypeError(f"thread must be a native thread id (int) or a thread name (str), "
                        f"not {type(thread).__name__}")
    found = [t for t in threads if t.name == thread] if isinstance(thread, str) else []
    if not found and (isinstance(thread, int) or thread.isdigit()):
        found = [t for t in threads if t.native_id == int(thread)]
    if found:
        return _one(found, f"thread {thread!r}", lambda t: f"{t.name} (native id {t.native_id})")
    known = ", ".join(f"{t.name or '?'} ({t.native_id})" for t in threads[:10]) or "none"
    raise ValueError(f"thread {thread!r} is not in this profile; its threads: {known}")
