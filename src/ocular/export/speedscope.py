"""speedscope: its published JSON file format
(https://www.speedscope.app/file-format-schema.json), for speedscope.app and
the tools that read it.

One "sampled" profile per thread (named after the thread), whose samples are
the stacks reconstructed from the call tree (see _stacks: exact where each
function on a stack has one caller, apportioned where it has several) and
whose weights are the leaf's self time under the stack, in whole nanoseconds
(rounded so that a thread's weights add up to its rounded total). Frames are
shared between threads; with lines=True a leaf frame goes down to the line.
"""

import json

from .. import __version__
from . import _output, _stacks

SCHEMA = "https://www.speedscope.app/file-format-schema.json"


def document(profile, progress, lines=False):
    """The speedscope file as a dict."""
    frames, index = [], {}

    def frame_index(frame):
        found = index.get(frame)
        if found is None:
            filename, qualname, _first, line = frame
            found = index[frame] = len(frames)
            frames.append({"name": _stacks.label(frame) if lines else qualname,
                           "file": filename, "line": line})
        return found

    profiles = []
    for thread, stacks in _stacks.stacks(profile, progress, lines):
        # Sorted, so that the time-ordered view shows stacks with a common
        # root side by side, as a flame graph does.
        indexed = sorted(([frame_index(frame) for frame in stack], cycles) for stack, cycles in stacks)
        ns = (profile.cycles_to_ns(cycles) for _, cycles in indexed)
        samples, weights = [], []
        for (sample, _), weight in zip(indexed, _stacks.integral(ns)):
            if weight:
                samples.append(sample)
                weights.append(weight)
            progress.step("stacks written", len(samples), len(indexed))
        profiles.append({"type": "sampled", "name": _stacks.thread_label(thread), "unit": "nanoseconds",
                         "startValue": 0, "endValue": sum(weights), "samples": samples,
                         "weights": weights})
    return {
        "$schema": SCHEMA,
        "shared": {"frames": frames},
        "profiles": profiles,
        "name": f"Ocular profile ({profile.mode} mode, threshold {profile.deinstrument_threshold})",
        "activeProfileIndex": 0,
        "exporter": f"ocular {__version__}",
    }


def write(profile, path, **options):
    path, settings = _output.arguments("speedscope", path, options, lines=(False, _output.flag))
    progress = _output.Progress(settings, "speedscope", path)
    with _output.output_file(path, "speedscope", binary=False) as handle:
        content = document(profile, progress, settings.lines)
        json.dump(content, handle, separators=(",", ":"))
    progress.finish(f"{sum(len(p['samples']) for p in content['profiles']):,} stacks")
    return path
