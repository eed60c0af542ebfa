"""Reads valgrind memcheck's XML output (`./dev valgrind`) and fails on any
error with a frame in Ocular's engine (_engine*.so): invalid reads and
writes, uses of uninitialised values, invalid frees, definite leaks. Errors
entirely inside CPython are counted and listed, not failed on (the
suppression file takes the known ones)."""

import sys
import xml.etree.ElementTree as ElementTree

# Engine bugs found by this check and not fixed yet, as strict expected
# failures: (kind prefix, innermost engine function, what is wrong). Seen:
# reported, not failed on. Not seen any more: fails, so the entry is removed.
KNOWN = [
    # (error kind prefix, engine function, why): errors known and accepted, none today
]


def errors(path):
    for error in ElementTree.parse(path).getroot().iter("error"):
        frames = [(frame.findtext("obj") or "", frame.findtext("fn") or "?") for frame in error.iter("frame")]
        yield error.findtext("kind"), frames, error.findtext("what") or error.findtext("xwhat/text") or ""


def known(kind, frames):
    engine = [fn for obj, fn in frames if "_engine" in obj]
    for index, (prefix, function, _) in enumerate(KNOWN):
        if kind.startswith(prefix) and engine and engine[0] == function:
            return index
    return None


def main(paths):
    ours = others = 0
    seen = set()
    for path in paths:
        for kind, frames, what in errors(path):
            engine = any("_engine" in obj for obj, _ in frames)
            index = known(kind, frames) if engine else None
            if index is not None:
                seen.add(index)
                continue
            ours += engine
            others += not engine
            if engine:
                print(f"{path}: {kind}: {what}")
                for obj, fn in frames[:12]:
                    print(f"    {fn}  ({obj.rsplit('/', 1)[-1]})")
    for index, (_, _, why) in enumerate(KNOWN):
        print(f"known engine bug {'seen (expected)' if index in seen else 'NOT SEEN any more: remove it from KNOWN'}"
              f": {why}")
    print(f"valgrind: {ours} errors in Ocular's engine, {others} elsewhere (CPython, not suppressed)")
    return 1 if ours or len(seen) < len(KNOWN) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
