"""Sphinx configuration of Sterna's docs (``make docs``, built with ``-W``: a warning fails the build).

The API reference is generated at build time from the OpenAPI document and the recorded samples
(docs/apiref.py); the operator and provider guides include the README sections they come from, so
there is one text to keep true, not two.
"""

from __future__ import annotations

import sys
from pathlib import Path

from sphinx.application import Sphinx

DOCS = Path(__file__).resolve().parent
sys.path[:0] = [str(DOCS.parent), str(DOCS)]

project = "Sterna"
author = "Sterna contributors"
extensions = ["myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
html_theme = "alabaster"
# No network at build time: no intersphinx, no remote images.
myst_heading_anchors = 3


def _generate(app: Sphinx) -> None:
    import apiref

    apiref.write(DOCS / "_generated" / "api.rst")


def setup(app: Sphinx) -> None:
    app.connect("builder-inited", _generate)
