"""Opcode facts for the engine, read from this interpreter's dis/opcode
modules because opcode numbers, cache sizes and jump kinds move between
CPython versions."""

import dis
import opcode

# Must match the OPF_* flags in _engine/codeinfo.h.
JUMP_FORWARD = 1 << 0
JUMP_BACKWARD = 1 << 1
CONDITIONAL = 1 << 2
TERMINATOR = 1 << 3
SILENT = 1 << 4
EXTENDED_ARG = 1 << 5
RESUME = 1 << 6
END_FOR = 1 << 7

# Jumps that sys.monitoring never reports as JUMP/BRANCH events.
_SILENT_JUMPS = {"SEND", "JUMP_BACKWARD_NO_INTERRUPT"}
_TERMINATORS = {"RETURN_VALUE", "RETURN_CONST", "RAISE_VARARGS", "RERAISE", "YIELD_VALUE"}


def cache_entries(name):
    entries = opcode._inline_cache_entries
    if isinstance(entries, dict):  # 3.13+: keyed by name
        return entries.get(name, 0)
    return entries[opcode.opmap[name]]  # 3.12: a list indexed by opcode


def _jump_opcodes():
    jumps = set(getattr(dis, "hasjump", ())) | set(dis.hasjrel) | set(getattr(dis, "hasjabs", ()))
    return {op for op in jumps if op < 256}


def opcode_table():
    """(caches: bytes[256], flags: list[int] of 256) for _engine.set_opcode_table."""
    caches = bytearray(256)
    flags = [0] * 256
    jumps = _jump_opcodes()
    for name, op in opcode.opmap.items():
        if op >= 256:
            continue  # pseudo-instructions never reach bytecode
        caches[op] = cache_entries(name)
        flag = 0
        if op in jumps:
            flag |= JUMP_BACKWARD if "BACKWARD" in name else JUMP_FORWARD
            if name.startswith("POP_JUMP_IF") or name in ("FOR_ITER", "SEND"):
                flag |= CONDITIONAL
            if name in _SILENT_JUMPS:
                flag |= SILENT
        if name in _TERMINATORS:
            flag |= TERMINATOR
        if name == "EXTENDED_ARG":
            flag |= EXTENDED_ARG
        if name == "RESUME":
            flag |= RESUME
        if name == "END_FOR":
            flag |= END_FOR
        flags[op] = flag
    return bytes(caches), flags
