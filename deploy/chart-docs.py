#!/usr/bin/env python3
"""Generates the chart's values table (in its README) and values.schema.json from the
comments of values.yaml (`make chart-docs`); `--check` fails when either is stale.

    deploy/chart-docs.py [--chart DIR] [--check]

values.yaml comments, directly above a key:

    # -- What the value does (the doc; continues on the next comment lines).
    # @schema {"minimum": 1}      JSON merged over the schema inferred from the default
    # @schema duration            shorthand: a Go duration string such as 30s or 1h30m
    key: default

The schema of a key is inferred from its default (boolean, integer, number, string,
array; a mapping is described key by key with no other keys allowed), then its
`@schema` JSON is merged over it. A mapping whose `@schema` gives a `type` is taken as
a whole (e.g. a Kubernetes object such as resources or affinity): its keys are neither
described nor documented one by one. An `anyOf`/`oneOf` without a `type` replaces the
inferred type. Every key described in the schema must have a doc,
except a mapping described key by key, so a value cannot be added without its doc and
its schema. The table lists every documented key in values.yaml order.
"""

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

DURATION = {
    "type": "string",
    "pattern": "^([0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h|d))+$",
}
PRESETS = {"duration": DURATION}
BEGIN = "<!-- values:begin (generated from values.yaml by `make chart-docs`) -->"
END = "<!-- values:end -->"
KEY = re.compile(r"^(\s*)([A-Za-z0-9_.-]+|\"[^\"]+\"):(\s|$)")


class Error(Exception):
    pass


def comments(text):
    """{path: (doc, schema)} from the comment block above each mapping key."""
    out = {}
    stack = []  # (indent, key)
    block = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("#"):
            block.append((number, stripped[1:].strip() if stripped != "#" else ""))
            continue
        match = KEY.match(line)
        if not match or line.lstrip().startswith("-"):
            block = []
            continue
        indent = len(match.group(1))
        key = match.group(2).strip('"')
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        path = ".".join(k for _, k in stack)
        doc, schema, in_doc = [], {}, False
        for n, c in block:
            if c.startswith("@schema"):
                in_doc = False
                arg = c[len("@schema"):].strip()
                if arg in PRESETS:
                    schema.update(PRESETS[arg])
                else:
                    try:
                        schema.update(json.loads(arg))
                    except json.JSONDecodeError as e:
                        raise Error(f"values.yaml:{n}: @schema of {path} is not JSON: {e}")
            elif c.startswith("-- ") or c == "--":
                in_doc = True
                doc = [c[2:].strip()]
            elif in_doc:
                doc.append(c)
        out[path] = (" ".join(d for d in doc if d), schema)
        block = []
    return out


def infer(value):
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer"}
    if isinstance(value, float):
        return {"type": "number"}
    if isinstance(value, str):
        return {"type": "string"}
    if isinstance(value, list):
        return {"type": "array"}
    if isinstance(value, dict):
        return {"type": "object"}
    if value is None:
        return {}
    raise Error(f"cannot infer a schema for {value!r}")


def describe(values, docs, prefix, rows):
    """The schema's `properties` for the mapping `values`; appends table rows."""
    properties = {}
    for key, value in values.items():
        path = f"{prefix}{key}"
        doc, annotation = docs.get(path, ("", {}))
        schema = infer(value)
        whole = "type" in annotation or not isinstance(value, dict) or not value
        if not whole:
            schema["additionalProperties"] = False
        if ("anyOf" in annotation or "oneOf" in annotation) and "type" not in annotation:
            del schema["type"]  # the alternatives say which types are allowed
        schema.update(annotation)
        if doc:
            schema["description"] = doc
        if whole:
            if not doc:
                raise Error(f"{path} has no doc: add a `# -- ...` comment above it in values.yaml")
            rows.append((path, type_of(schema), f"`{json.dumps(value, ensure_ascii=False)}`", doc))
        else:
            if doc:
                rows.append((path, "object", "see below", doc))
            props = describe(value, docs, f"{path}.", rows)
            ordered = {"type": schema.pop("type"), "additionalProperties": schema.pop("additionalProperties")}
            ordered["properties"] = props
            ordered.update(schema)
            schema = ordered
        properties[key] = schema
    return properties


def type_of(schema):
    if "type" in schema:
        kind = schema["type"]
        if kind == "array" and "type" in schema.get("items", {}):
            return f"list of {schema['items']['type']}"
        if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
            return f"map of {schema['additionalProperties'].get('type', 'object')}"
        return kind
    if "anyOf" in schema:
        return " or ".join(type_of(s) for s in schema["anyOf"])
    return "any"


def cell(text):
    return text.replace("|", "\\|").replace("\n", " ")


def table(rows):
    lines = ["| Value | Type | Default | Meaning |", "|---|---|---|---|"]
    for path, kind, default, doc in rows:
        lines.append(f"| `{path}` | {cell(kind)} | {cell(default)} | {cell(doc)} |")
    return "\n".join(lines) + "\n"


def generate(chart):
    text = (chart / "values.yaml").read_text()
    values = yaml.safe_load(text)
    docs = comments(text)
    rows = []
    properties = {"global": {"type": "object", "description": "Helm's global values (unused)."}}
    properties.update(describe(values, docs, "", rows))
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "vultr-iam-operator chart values",
        "description": "Generated from values.yaml by `make chart-docs` (deploy/chart-docs.py); do not edit.",
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
    }
    schema_text = json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
    readme = (chart / "README.md").read_text()
    if BEGIN not in readme or END not in readme:
        raise Error(f"{chart}/README.md has no {BEGIN} ... {END} markers")
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme_text = f"{head}{BEGIN}\n{table(rows)}{END}{tail}"
    return {"values.schema.json": schema_text, "README.md": readme_text}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chart", default=str(Path(__file__).resolve().parent.parent / "charts/vultr-iam-operator"))
    parser.add_argument("--check", action="store_true", help="fail when a generated file is stale")
    args = parser.parse_args()
    chart = Path(args.chart)
    try:
        files = generate(chart)
    except Error as e:
        print(f"chart-docs: {e}", file=sys.stderr)
        return 1
    stale = [name for name, text in files.items() if (chart / name).read_text() != text]
    if args.check:
        if stale:
            print(f"chart-docs: {', '.join(stale)} of {chart} differ from values.yaml: run `make chart-docs`",
                  file=sys.stderr)
            return 1
        return 0
    for name in stale:
        (chart / name).write_text(files[name])
        print(f"chart-docs: wrote {chart / name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
