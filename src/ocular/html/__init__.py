"""The HTML report's page: report.html, with report.css and report.js put in
place and the data (already escaped JSON, see ocular.export.html) beside
them. The three files are package data; the page loads nothing else."""

import re
from importlib import resources

_SLOT = re.compile(r"/\*OCULAR:(CSS|JS|DATA)\*/")


def asset(name):
    """The text of one of this package's files."""
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def page(data_json):
    """The whole document. One pass over the template, so nothing in the
    data or the assets can be taken for a slot."""
    parts = {"CSS": asset("report.css"), "JS": asset("report.js"), "DATA": data_json}
    # Neither asset may end the element it sits in.
    if "</style" in parts["CSS"].lower() or "</script" in parts["JS"].lower() or "<!--" in parts["JS"]:
        raise RuntimeError("report.css or report.js would end its own element")
    return _SLOT.sub(lambda match: parts[match.group(1)], asset("report.html"))
