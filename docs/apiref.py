"""The API reference of the docs, as reStructuredText generated from Sterna's own OpenAPI document.

Nothing here lists a route by hand: the operations, their parameters and bodies come from
``api.openapi.document`` (the document the API serves at ``/openapi.json``), and each operation's
sample comes from ``docs/api-samples.json``, which ``tests/api/test_api_samples.py`` records from a
real run of the test stack (and checks against the document). An operation without a sample is an
error, not a gap in the page.
"""

from __future__ import annotations

import json
import re
from http import HTTPStatus
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent
SAMPLES = DOCS / "api-samples.json"
# Coriolis's resource groups, in the order an operator meets them; a tag not listed comes last.
TAG_ORDER = ["app", "health", "providers", "endpoints", "migrations", "transfers", "executions", "schedules",
             "deployments"]
TAG_TITLES = {"app": "Service", "health": "Health and metrics"}


def _esc(text: str) -> str:
    """Plain text in reST: the characters that would start markup are escaped."""
    return re.sub(r"([\\*`|_])", r"\\\1", text)


def _anchor(name: str) -> str:
    return "api-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _type(schema: dict[str, Any]) -> str:
    """A schema as one short type expression, with references to the schema section."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f":ref:`{name} <{_anchor('schema ' + name)}>`"
    if "anyOf" in schema:
        return " or ".join(_type(s) for s in schema["anyOf"])
    kind = schema.get("type", "any")
    if isinstance(kind, list):
        return " or ".join(_type({**schema, "type": k}) for k in kind)
    if kind == "array":
        return f"array of {_type(schema.get('items', {}))}"
    if kind == "object" and "properties" in schema:
        return "object {" + ", ".join(f"``{k}``: {_type(v)}" for k, v in schema["properties"].items()) + "}"
    extra = [_esc(f"{k} {schema[k]}") for k in ("format", "minimum", "maximum", "maxLength", "pattern")
             if k in schema]
    if "enum" in schema:
        extra.append("one of " + ", ".join(f"``{v}``" for v in schema["enum"]))
    return f"``{kind}``" + (f" ({'; '.join(extra)})" if extra else "")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = [".. list-table::", "   :header-rows: 1", ""]
    for row in [header, *rows]:
        out.append(f"   * - {row[0] or ' '}")
        out.extend(f"     - {cell or ' '}" for cell in row[1:])
    return [*out, ""]


def _code(language: str, text: str) -> list[str]:
    return [f".. code-block:: {language}", "", *("   " + line if line else "" for line in text.splitlines()), ""]


def _title(text: str, char: str) -> list[str]:
    return [text, char * len(text), ""]


def _sample(sample: dict[str, Any]) -> list[str]:
    request, response = sample["request"], sample["response"]
    lines = [f"{request['method']} {request['path']} HTTP/1.1"]
    if request.get("body") is not None:
        lines += ["Content-Type: application/json", "", json.dumps(request["body"], indent=2)]
    out = ["Request:", "", *_code("http", "\n".join(lines))]
    status = [f"HTTP/1.1 {response['status']} {HTTPStatus(response['status']).phrase}"]
    body = response.get("body")
    if isinstance(body, str):
        status += ["Content-Type: text/plain", "", body]
    elif body is not None:
        status += ["Content-Type: application/json", "", json.dumps(body, indent=2)]
    out += ["Response:", "", *_code("http", "\n".join(status))]
    if sample.get("abridged"):
        out += [f"*{_esc(sample['abridged'])}*", ""]
    return out


def _operation(path: str, method: str, op: dict[str, Any], sample: dict[str, Any]) -> list[str]:
    out = [f".. _{_anchor(op['operationId'])}:", "", *_title(f"{method.upper()} {path}", "~")]
    out += [_esc(op["summary"].rstrip(".")) + ".", ""]
    params = op.get("parameters", [])
    if params:
        out += ["**Parameters**", ""]
        out += _table(["name", "in", "type", "required", "meaning"], [
            [f"``{p['name']}``", p["in"], _type(p["schema"]), "yes" if p.get("required") else "no",
             _esc(p.get("description", ""))] for p in params])
    body = op.get("requestBody")
    if body:
        out += ["**Request body** (``application/json``): " + _type(body["content"]["application/json"]["schema"]),
                ""]
    out += ["**Responses**", ""]
    rows = []
    for code, resp in op["responses"].items():
        schema = resp.get("content", {}).get("application/json", {}).get("schema")
        rows.append([f"``{code}``", _esc(resp["description"]), _type(schema) if schema else ""])
    out += _table(["status", "meaning", "body"], rows)
    out += ["**Sample** (recorded from a real run):", "", *_sample(sample)]
    return out


def _schema(name: str, schema: dict[str, Any]) -> list[str]:
    out = [f".. _{_anchor('schema ' + name)}:", "", *_title(name, "~")]
    if schema.get("description"):
        # The models' docstrings: reST already.
        out += [schema["description"], ""]
    required = set(schema.get("required", []))
    rows = []
    for field, prop in schema.get("properties", {}).items():
        default = f"``{json.dumps(prop['default'])}``" if "default" in prop else ""
        rows.append([f"``{field}``", _type(prop), "yes" if field in required else "no", default,
                     prop.get("description", "")])
    if rows:
        out += _table(["field", "type", "required", "default", "meaning"], rows)
    return out


def render(doc: dict[str, Any], samples: dict[str, Any]) -> str:
    """The API reference page; raises if an operation of ``doc`` has no recorded sample."""
    operations = samples["operations"]
    missing = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()
               if op["operationId"] not in operations]
    if missing:
        raise ValueError(f"no recorded sample for {missing}: run tests/api/test_api_samples.py "
                         "with STERNA_WRITE_API_SAMPLES=1")
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            by_tag.setdefault(op["tags"][0], []).append((path, method, op))
    tags = sorted(by_tag, key=lambda t: (TAG_ORDER.index(t) if t in TAG_ORDER else len(TAG_ORDER), t))
    out = [".. This page is generated by docs/apiref.py from api/openapi.py and docs/api-samples.json.", "",
           *_title("API reference", "="),
           _esc(doc["info"]["title"]) + f", OpenAPI {doc['openapi']}. Every operation below is generated from",
           "the document the API serves at ``/openapi.json``; each sample is a request and its answer recorded",
           f"from a real run of the test stack ({_esc(samples['recorded'])}).", "",
           "Errors, from any route, are Coriolis error bodies (:ref:`Error <api-schema-error>`), for example:", "",
           *_code("json", json.dumps(samples["error_example"], indent=2))]
    for tag in tags:
        out += _title(TAG_TITLES.get(tag, tag.capitalize()), "-")
        for path, method, op in by_tag[tag]:
            out += _operation(path, method, op, operations[op["operationId"]])
    out += _title("Schemas", "-")
    for name, schema in doc["components"]["schemas"].items():
        out += _schema(name, schema)
    return "\n".join(out) + "\n"


def write(target: Path) -> None:
    from api import openapi
    from api.app import ROUTES

    text = render(openapi.document(ROUTES), json.loads(SAMPLES.read_text()))
    # Rewritten only when it changes, so Sphinx's incremental build keeps what it has.
    if not target.exists() or target.read_text() != text:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
