"""Headless Chromium for the HTML report's tests: render a page with a hook
that records every console error, uncaught exception and blocked load, run
checks inside the page, take screenshots; and a PNG reader for those."""

import html
import json
import os
import re
import shutil
import struct
import subprocess
import zlib

import pytest

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TIMEOUT_S = 120


def require():
    for name in NAMES:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("headless Chromium is not installed, so the report was not rendered "
                "(Debian: apt-get install chromium; ./dev test installs it where apt-get works)")


# First in <head>: records what would otherwise only reach the console.
_ERROR_HOOK = """<script>
window.__problems = [];
(function () {
  function note(kind, text) { window.__problems.push(kind + ": " + text); }
  for (const level of ["error", "warn"]) {
    const original = console[level];
    console[level] = function () {
      note("console." + level, Array.prototype.join.call(arguments, " "));
      return original.apply(console, arguments);
    };
  }
  window.addEventListener("error", function (e) { note("error", e.message + " at line " + e.lineno); });
  window.addEventListener("unhandledrejection", function (e) { note("rejection", String(e.reason)); });
  document.addEventListener("securitypolicyviolation", function (e) {
    note("blocked", e.violatedDirective + " " + e.blockedURI);
  });
})();
</script>"""

# Last in <body>, after the page's own script: runs the test's checks and
# leaves the results in the DOM, which --dump-dom prints.
_REPORT = """<script>
(function () {
  const results = {};
  try {
%s
  } catch (e) { window.__problems.push("check failed: " + e + " " + e.stack); }
  const out = document.createElement("pre");
  out.id = "test-report";
  out.textContent = JSON.stringify({problems: window.__problems, results: results});
  document.body.appendChild(out);
})();
</script>"""


def instrument(document, checks=""):
    """The page with the error hook before its content and `checks` (JavaScript
    setting fields of `results`) run after its own script."""
    head = document.index("</title>") + len("</title>")
    end = document.rindex("</body>")
    return document[:head] + _ERROR_HOOK + document[head:end] + _REPORT % checks + document[end:]


def _run(chromium, arguments, profile_dir):
    command = [chromium, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
               "--hide-scrollbars", f"--user-data-dir={profile_dir}", "--enable-logging=stderr", "--v=0",
               *arguments]
    # Not under the sanitizer runtime `./dev sanitize` preloads into the tests.
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS")}
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    # Chromium logs every console message of the page as CONSOLE; the report logs none.
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return done.stdout, console


def render(chromium, path, tmp_path):
    """(DOM after the page's scripts ran, the test report, console lines) of an
    instrumented page."""
    dom, console = _run(chromium, ["--dump-dom", path.as_uri()], tmp_path / "chromium-profile")
    match = re.search(r'<pre id="test-report">(.*?)</pre>', dom, re.S)
    assert match, "the page's checks never ran: " + dom[-2000:]
    return dom, json.loads(html.unescape(match.group(1))), console


def screenshot(chromium, path, png, tmp_path, width=1000, height=700):
    _, console = _run(chromium, [f"--screenshot={png}", f"--window-size={width},{height}",
                                 "--force-device-scale-factor=1", path.as_uri()],
                      tmp_path / "chromium-profile")
    return console


def read_png(path):
    """(width, height, rows of (r, g, b) tuples) of an 8-bit, non-interlaced RGB or RGBA PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    position, compressed = 8, []
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        body = data[position + 8:position + 8 + length]
        position += 12 + length
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            compressed.append(body)
    assert depth == 8 and interlace == 0 and color in (2, 6), (depth, color, interlace)
    channels = 3 if color == 2 else 4
    raw = zlib.decompress(b"".join(compressed))
    stride = width * channels
    previous = bytearray(stride)
    rows = []
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):  # PNG's five row filters
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + up) & 255
            elif kind == 3:
                line[i] = (line[i] + ((left + up) >> 1)) & 255
            elif kind == 4:
                corner = previous[i - channels] if i >= channels else 0
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 255
        rows.append([tuple(line[x:x + 3]) for x in range(0, stride, channels)])
        previous = line
    return width, height, rows
