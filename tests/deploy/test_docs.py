"""``make docs`` builds with no warning, and the API reference holds every operation with its sample (issue 18).

The build is the one ``make docs`` runs (``sphinx-build -E -W``), into a temporary folder, offline: the
reference is generated from ``api.openapi.document`` and the committed samples, which
tests/api/test_api_samples.py records from a real run and keeps current.
"""

from __future__ import annotations

import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from api import openapi
from api.app import ROUTES

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "docs"))

import apiref  # noqa: E402  (docs/ is not a package: the build imports it the same way)


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.ids.update(v for k, v in attrs if k == "id" and v)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _page(path: Path) -> _Text:
    parsed = _Text()
    parsed.feed(path.read_text())
    return parsed


def test_docs_build_without_warnings_and_hold_every_operation(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "sphinx", "-E", "-W", "--keep-going", "-q", "-b", "html",
                          str(ROOT / "docs"), str(tmp_path / "html")], capture_output=True, text=True,
                         cwd=ROOT, check=False)
    assert out.returncode == 0 and "WARNING" not in out.stderr, out.stderr[-5000:]
    api = _page(tmp_path / "html" / "_generated" / "api.html")
    text = "".join(api.text)
    samples = json.loads(apiref.SAMPLES.read_text())["operations"]
    for path, ops in openapi.document(ROUTES)["paths"].items():
        for method, op in ops.items():
            assert apiref._anchor(op["operationId"]) in api.ids, op["operationId"]
            # The recorded request line is on the page (ids and all: the sample is the run's own).
            assert f"{method.upper()} {samples[op['operationId']]['request']['path']} HTTP/1.1" in text, path
    assert "api-schema-error" in api.ids and '"fault"' in text
    operator = "".join(_page(tmp_path / "html" / "operator.html").text)
    assert "Running the service for real" in operator and "STERNA_HOST_SCHEDULE_TO_START_TIMEOUT" in operator
    for provider in ("aws", "azure", "gcp"):
        assert "connection_info" in "".join(_page(tmp_path / "html" / "providers" / f"{provider}.html").text)


def test_an_operation_without_a_sample_stops_the_build() -> None:
    samples = json.loads(apiref.SAMPLES.read_text())
    samples["operations"].pop("get:/healthz")
    with pytest.raises(ValueError, match="get:/healthz"):
        apiref.render(openapi.document(ROUTES), samples)
