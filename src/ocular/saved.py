"""Saving a Profile to a file and loading it back: profile.save(path),
ocular.load(path).

The file is a JSON document (gzipped when the name ends in .gz), so that
loading runs no code: nothing in it is ever called or imported, only read as
numbers and strings and checked against the model's own field types.

    {"format": "ocular.profile", "version": 1, "ocular": "0.1.0",
     "profile": {"mode": "adaptive", ..., "functions": TABLE, ...}}

A tuple of records is a TABLE, {"fields": [names...], "rows": [[values...], ...]},
so that each field name is written once and a file is read by name, never by
position. An edge of the call tree is a row [caller, callee, calls, cycles,
inclusive_cycles] where caller and callee are indexes into the `functions`
table beside it (caller null: below what Ocular saw). The calibration is an
object of its fields; its costs map each event kind to a {ticks, spread} pair.

Every field of the model is saved by name (dataclasses.fields), so a field the
model gains is saved without a change here if its type is a plain one (int,
float, str, bool, or one of them or None); a container field needs a line in
_CONTAINERS, and saving raises TypeError naming it until it has one. A file
that lacks a field the model gained loads with that field's default; a field
this version does not know is refused, as is a newer format version.
"""

import dataclasses
import gzip
import json
import math
import os
import types
import zlib

from . import _calibration, _profile

FORMAT = "ocular.profile"
VERSION = 1
MAX_BYTES = 1 << 30  # a profile this large (decompressed) is refused rather than read
MAX_INT = 1 << 64  # figures are 64-bit counts; anything larger is not one of ours
_GZIP_MAGIC = b"\x1f\x8b"


# ---- the schema: what each container field holds ------------------------------


@dataclasses.dataclass(frozen=True)
class _Table:
    """A tuple of records of one class."""

    record: type


@dataclasses.dataclass(frozen=True)
class _Edges:
    """A tuple of (caller FunctionStats or None, callee FunctionStats, CallStats)
    whose functions are records of the sibling field `functions`."""

    functions: str


@dataclasses.dataclass(frozen=True)
class _Object:
    """One record of a class, or None when `optional`."""

    record: type
    optional: bool = False


@dataclasses.dataclass(frozen=True)
class _Mapping:
    """A dict from str to `value` (a type or a schema entry)."""

    value: object


@dataclasses.dataclass(frozen=True)
class _Sequence:
    """A tuple of `value` (a plain type)."""

    value: type


_CONTAINERS = {
    (_profile.Profile, "functions"): _Table(_profile.FunctionStats),
    (_profile.Profile, "blocks"): _Table(_profile.BlockStats),
    (_profile.Profile, "lines"): _Table(_profile.LineStats),
    (_profile.Profile, "instructions"): _Table(_profile.InstructionStats),
    (_profile.Profile, "sites"): _Table(_profile.SiteStats),
    (_profile.Profile, "threads"): _Table(_profile.ThreadStats),
    (_profile.Profile, "calibration"): _Object(_calibration.Calibration, optional=True),
    (_profile.Profile, "sampling"): _Object(_profile.Sampling, optional=True),
    (_profile.Profile, "_edges"): _Edges("functions"),
    (_profile.Profile, "subprocesses"): _Sequence(str),
    (_profile.ThreadStats, "functions"): _Table(_profile.FunctionStats),
    (_profile.ThreadStats, "edges"): _Edges("functions"),
    (_calibration.Calibration, "costs"): _Mapping(_Object(_calibration.KindCost)),
    (_calibration.Calibration, "far"): _Object(_calibration.KindCost),
    (_calibration.Calibration, "scales"): _Sequence(float),
    (_calibration.Calibration, "untraced"): _Mapping(float),
}
_EDGE_FIELDS = [f.name for f in dataclasses.fields(_profile.CallStats)]


def _plain_types(annotation):
    """The JSON-native types a field annotated `annotation` may hold, or None."""
    if isinstance(annotation, types.UnionType):
        members = annotation.__args__
    else:
        members = (annotation,)
    if all(m in (int, float, str, bool, type(None)) for m in members):
        return members
    return None


def _kind_of(cls, field):
    kind = _CONTAINERS.get((cls, field.name))
    if kind is not None:
        return kind
    plain = _plain_types(field.type)
    if plain is None:
        raise TypeError(
            f"ocular.saved has no schema for {cls.__name__}.{field.name} ({field.type!r}); "
            "add it to _CONTAINERS"
        )
    return plain


# ---- saving --------------------------------------------------------------------


def _encode_value(kind, value, record):
    if isinstance(kind, tuple):  # plain: checked as load() will check it
        try:
            _check_plain(kind, value, "")
        except _Invalid:
            raise TypeError(f"cannot save {value!r}: the model declares {kind}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"cannot save a non-finite number ({value!r})")
        return value
    if isinstance(kind, _Table):
        return _encode_table(kind.record, value)
    if isinstance(kind, _Edges):
        return _encode_edges(value, getattr(record, kind.functions))
    if isinstance(kind, _Object):
        return None if value is None else _encode_object(kind.record, value)
    if isinstance(kind, _Mapping):
        return {str(k): _encode_value(_as_kind(kind.value), v, None) for k, v in value.items()}
    if isinstance(kind, _Sequence):
        return [_encode_value((kind.value,), v, None) for v in value]
    raise AssertionError(kind)


def _as_kind(value):
    return (value,) if isinstance(value, type) else value


def _encode_object(cls, record):
    return {f.name: _encode_value(_kind_of(cls, f), getattr(record, f.name), record)
            for f in dataclasses.fields(cls)}


def _encode_table(cls, records):
    fields = dataclasses.fields(cls)
    kinds = [_kind_of(cls, f) for f in fields]
    rows = [[_encode_value(kind, getattr(r, f.name), r) for f, kind in zip(fields, kinds)]
            for r in records]
    return {"fields": [f.name for f in fields], "rows": rows}


def _encode_edges(edges, functions):
    index = {}
    for i, function in enumerate(functions):
        index.setdefault(function, i)

    def ref(function):
        if function is None:
            return None
        if function not in index:  # not one of the sibling records: write it out whole
            return _encode_object(_profile.FunctionStats, function)
        return index[function]

    rows = [[ref(caller), ref(callee), *(getattr(stats, name) for name in _EDGE_FIELDS)]
            for caller, callee, stats in edges]
    return {"fields": ["caller", "callee", *_EDGE_FIELDS], "rows": rows}


def to_document(profile):
    """The JSON-ready dict of `profile` (what save() writes)."""
    from . import __version__

    return {"format": FORMAT, "version": VERSION, "ocular": __version__,
            "profile": _encode_object(_profile.Profile, profile)}


def save(profile, path):
    """Write `profile` to `path` (gzipped if it ends in .gz). Written to a
    temporary file beside it first, so an existing file is replaced whole or
    not at all."""
    if not isinstance(profile, _profile.Profile):
        raise TypeError(f"save() needs a Profile, not {type(profile).__name__}")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, not {type(path).__name__}")
    path = os.fspath(path)
    data = json.dumps(to_document(profile), separators=(",", ":"), allow_nan=False).encode()
    if str(path).endswith(".gz"):
        data = gzip.compress(data, compresslevel=6, mtime=0)
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        with open(temporary, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except OSError as error:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise OSError(error.errno, f"could not save the profile to {path}: {error.strerror}", path) from error


# ---- loading -------------------------------------------------------------------


class _Invalid(Exception):
    """A place in the document and what is wrong there."""


def _reject_constant(name):
    raise _Invalid(f"{name} is not a number Ocular writes")


def _read(path):
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_BYTES + 1)
    except OSError as error:
        raise OSError(error.errno, f"could not read the profile {path}: {error.strerror}", path) from error
    if data[:2] == _GZIP_MAGIC:
        try:
            decompressor = zlib.decompressobj(wbits=31)
            data = decompressor.decompress(data, MAX_BYTES + 1)
            if not decompressor.eof:
                if len(data) > MAX_BYTES:
                    raise _Invalid(f"it holds more than {MAX_BYTES >> 20} MB")
                raise _Invalid("the gzip stream is truncated")
        except zlib.error as error:
            raise _Invalid(f"it is not valid gzip ({error})") from None
    if len(data) > MAX_BYTES:
        raise _Invalid(f"it holds more than {MAX_BYTES >> 20} MB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _Invalid("it is not UTF-8 text (not JSON)") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as error:
        if error.pos >= len(text.rstrip()):
            raise _Invalid("it is truncated (the JSON ends early)") from None
        raise _Invalid(f"it is not JSON ({error})") from None
    except RecursionError:
        raise _Invalid("it is nested too deeply") from None
    except ValueError as error:  # e.g. an integer with too many digits
        raise _Invalid(f"it is not JSON Ocular writes ({error})") from None


def _check_plain(kinds, value, where):
    if value is None and type(None) in kinds:
        return None
    if isinstance(value, bool):
        if bool in kinds:
            return value
    elif isinstance(value, int):
        if int in kinds or float in kinds:
            if abs(value) > MAX_INT:
                raise _Invalid(f"{where}: the number {value} is out of range")
            return value if int in kinds else float(value)
    elif isinstance(value, float):
        if float in kinds:
            if not math.isfinite(value):  # 1e999 reads as inf: no figure of ours is one
                raise _Invalid(f"{where}: the number {value} is out of range")
            return value
    elif isinstance(value, str):
        if str in kinds:
            return value
    names = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
    raise _Invalid(f"{where}: expected {names}, found {type(value).__name__}")


def _decode_value(kind, value, where, decoded_fields):
    if isinstance(kind, tuple):
        return _check_plain(kind, value, where)
    if isinstance(kind, _Table):
        return _decode_table(kind.record, value, where)
    if isinstance(kind, _Edges):
        return _decode_edges(value, decoded_fields.get(kind.functions, ()), where)
    if isinstance(kind, _Object):
        if value is None and kind.optional:
            return None
        return _decode_object(kind.record, value, where)
    if isinstance(kind, _Mapping):
        if not isinstance(value, dict):
            raise _Invalid(f"{where}: expected an object, found {type(value).__name__}")
        return {k: _decode_value(_as_kind(kind.value), v, f"{where}.{k}", None) for k, v in value.items()}
    if isinstance(kind, _Sequence):
        if not isinstance(value, list):
            raise _Invalid(f"{where}: expected a list, found {type(value).__name__}")
        return tuple(_decode_value((kind.value,), v, f"{where}[{i}]", None) for i, v in enumerate(value))
    raise AssertionError(kind)


def _fields_by_name(cls, names, where):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [name for name in names if name not in fields]
    if unknown:
        raise _Invalid(f"{where}: unknown field {unknown[0]!r} for {cls.__name__} "
                       "(written by a newer Ocular?)")
    missing = [name for name, f in fields.items() if name not in names
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise _Invalid(f"{where}: field {missing[0]!r} of {cls.__name__} is missing")
    return [fields[name] for name in names]


def _build(cls, values, where):
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:
        raise _Invalid(f"{where}: {error}") from None


def _decode_object(cls, value, where):
    if not isinstance(value, dict):
        raise _Invalid(f"{where}: expected an object, found {type(value).__name__}")
    fields = _fields_by_name(cls, list(value), where)
    # Tables before the edges that refer to them.
    fields.sort(key=lambda f: isinstance(_CONTAINERS.get((cls, f.name)), _Edges))
    values = {}
    for field in fields:
        values[field.name] = _decode_value(_kind_of(cls, field), value[field.name],
                                           f"{where}.{field.name}", values)
    return _build(cls, values, where)


def _table_parts(value, where):
    if not isinstance(value, dict) or set(value) != {"fields", "rows"}:
        raise _Invalid(f"{where}: expected a table {{fields, rows}}")
    names, rows = value["fields"], value["rows"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) \
            or len(set(names)) != len(names):
        raise _Invalid(f"{where}.fields: expected a list of distinct names")
    if not isinstance(rows, list):
        raise _Invalid(f"{where}.rows: expected a list")
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != len(names):
            raise _Invalid(f"{where}.rows[{i}]: expected a list of {len(names)} values")
    return names, rows


def _decode_table(cls, value, where):
    names, rows = _table_parts(value, where)
    fields = _fields_by_name(cls, names, where)
    order = sorted(range(len(fields)),
                   key=lambda i: isinstance(_CONTAINERS.get((cls, fields[i].name)), _Edges))
    kinds = [_kind_of(cls, f) for f in fields]
    records = []
    for r, row in enumerate(rows):
        values = {}
        for i in order:
            values[fields[i].name] = _decode_value(kinds[i], row[i], f"{where}[{r}].{fields[i].name}", values)
        records.append(_build(cls, values, f"{where}[{r}]"))
    return tuple(records)


def _decode_edges(value, functions, where):
    names, rows = _table_parts(value, where)
    if names != ["caller", "callee", *_EDGE_FIELDS]:
        raise _Invalid(f"{where}.fields: expected {['caller', 'callee', *_EDGE_FIELDS]}")

    def function(ref, place, optional):
        if ref is None and optional:
            return None
        if isinstance(ref, dict):
            return _decode_object(_profile.FunctionStats, ref, place)
        if isinstance(ref, int) and not isinstance(ref, bool) and 0 <= ref < len(functions):
            return functions[ref]
        raise _Invalid(f"{place}: expected the index of a function (0..{len(functions) - 1})")

    edges = []
    for r, (caller, callee, *figures) in enumerate(rows):
        place = f"{where}[{r}]"
        stats = {name: _check_plain((int,), v, f"{place}.{name}") for name, v in zip(_EDGE_FIELDS, figures)}
        edges.append((function(caller, f"{place}.caller", True), function(callee, f"{place}.callee", False),
                      _profile.CallStats(**stats)))
    return tuple(edges)


def from_document(document):
    """The Profile a document (as json.loads gives it) holds; _Invalid if it is not one."""
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise _Invalid(f"it is not an Ocular profile (no \"format\": \"{FORMAT}\")")
    version = document.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise _Invalid(f"its format version {version!r:.40} is not one Ocular writes")
    if version > VERSION:
        raise _Invalid(f"it was written by a newer Ocular ({document.get('ocular', '?')!s:.20}, "
                       f"format version {version}); this one reads versions up to {VERSION}")
    return _decode_object(_profile.Profile, document.get("profile"), "profile")


def load(path):
    """The Profile saved in `path` by Profile.save(). ValueError if the file is
    not one (or is truncated, damaged, or from a newer Ocular); OSError with
    the path if it cannot be read."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, not {type(path).__name__}")
    path = os.fspath(path)
    try:
        return from_document(_read(path))
    except _Invalid as problem:
        raise ValueError(f"{path} is not a profile Ocular can load: {problem}") from None
