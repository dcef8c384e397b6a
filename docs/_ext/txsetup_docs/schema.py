"""``{json-schema}``: the field tables of a page, rendered from the JSON Schema it publishes.

The schemas are what the tests validate against (every log line, every
accepted payload), so a table made from them cannot disagree with the code
the way a hand-typed one could. Two layouts:

- objects (the default): the top-level object's fields, then one table per
  object under ``$defs``;
- ``:events:``: one table per event, from the schema's ``allOf`` of ``if
  event is ... then ...`` (``:prefixes:`` keeps the events whose names start
  with one of the given prefixes, ``:exclude:`` drops them); with
  ``:common:`` instead, the fields of the top-level object, which every line
  has (the required ones) or has with that type whenever it carries them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

from txsetup_docs.nodes import inline, paragraph, table

Schema = Mapping[str, Any]
_HEADER = ("field", "type", "required", "description")


def load(path: Path) -> Schema:
    """The schema in ``path``."""
    loaded: Schema = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def type_of(node: Schema, root: Schema) -> str:
    """A short type for people: ``string, not empty``, ``array of key pair``, one of ..."""
    if "$ref" in node:
        name = str(node["$ref"]).rsplit("/", 1)[-1]
        target = root.get("$defs", {}).get(name, {})
        if target.get("type") == "object":
            return f"{target.get('title', name)} (below)"
        return type_of(target, root)
    if "const" in node or "enum" in node:
        values = [node["const"]] if "const" in node else node["enum"]
        shown = ", ".join(f"`{json.dumps(value)}`" for value in values)
        return shown if "const" in node else f"one of {shown}"
    kinds = node.get("type", "any")
    kind = " or ".join(kinds) if isinstance(kinds, list) else str(kinds)
    return _container(kind, node, root) or ", ".join([kind, *_limits(node)])


def _container(kind: str, node: Schema, root: Schema) -> str | None:
    """Arrays and objects by what they hold; None for anything else."""
    if kind == "array" and "prefixItems" in node:
        items = ", ".join(type_of(item, root) for item in node["prefixItems"])
        return f"array of {len(node['prefixItems'])}: [{items}]"
    if kind == "array" and isinstance(node.get("items"), Mapping):
        return f"array of {type_of(node['items'], root)}"
    if kind == "object" and isinstance(node.get("additionalProperties"), Mapping):
        return f"object: string → {type_of(node['additionalProperties'], root)}"
    return None


def _limits(node: Schema) -> Iterator[str]:
    if node.get("minLength") == 1:
        yield "not empty"
    if "maxLength" in node:
        yield f"at most {node['maxLength']:,} characters"
    if "minimum" in node and "maximum" in node:
        yield f"{node['minimum']} to {node['maximum']}"
    elif "minimum" in node:
        yield f"at least {node['minimum']}"


def object_rows(node: Schema, root: Schema) -> list[list[str]]:
    """One row per property of the object ``node``: field, type, required, description."""
    required = set(node.get("required", ()))
    return [
        [f"`{name}`", type_of(prop, root), "yes" if name in required else "no", _text(prop)]
        for name, prop in node.get("properties", {}).items()
    ]


def _text(node: Schema) -> str:
    return str(node.get("description", ""))


def events(root: Schema) -> dict[str, dict[str, Any]]:
    """Each event the schema names, with every ``then`` that applies to it merged into one."""
    merged: dict[str, dict[str, Any]] = {}
    for rule in root.get("allOf", ()):
        event = rule.get("if", {}).get("properties", {}).get("event", {})
        then = rule.get("then", {})
        for name in [event["const"]] if "const" in event else event.get("enum", ()):
            into = merged.setdefault(name, {"description": "", "required": [], "properties": {}})
            into["description"] = into["description"] or then.get("description", "")
            into["required"].extend(
                r for r in then.get("required", ()) if r not in into["required"]
            )
            for field, prop in then.get("properties", {}).items():
                into["properties"][field] = {**into["properties"].get(field, {}), **prop}
    return merged


def grouped(found: Mapping[str, Schema]) -> list[tuple[list[str], Schema]]:
    """Events described alike (``daemon.healthy`` and ``daemon.unhealthy``) share one table."""
    groups: list[tuple[list[str], Schema]] = []
    for name, then in found.items():
        same = next((names for names, other in groups if other == then), None)
        if same is None:
            groups.append(([name], then))
        else:
            same.append(name)
    return groups


def event_rows(then: Schema, root: Schema) -> list[list[str]]:
    """The fields an event carries besides the common ones (and the common ones it requires)."""
    common = root.get("properties", {})
    own = then.get("properties", {})
    required = list(then.get("required", ()))
    rows = []
    for name in dict.fromkeys([*required, *own]):
        prop = {**common.get(name, {}), **own.get(name, {})}
        rows.append(
            [f"`{name}`", type_of(prop, root), "yes" if name in required else "no", _text(prop)]
        )
    return rows


class JsonSchemaDirective(SphinxDirective):
    """Render a JSON Schema next to the page (a path relative to it) as tables."""

    required_arguments = 1
    option_spec: ClassVar[dict[str, Any]] = {
        "events": directives.flag,
        "prefixes": directives.unchanged,
        "exclude": directives.unchanged,
        "common": directives.flag,
    }

    def run(self) -> list[nodes.Node]:
        """Tables for the objects (or the events) of the schema."""
        _, path = self.env.relfn2path(self.arguments[0], self.env.docname)
        self.env.note_dependency(path)
        root = load(Path(path))
        if "events" in self.options:
            return self._events(root)
        out: list[nodes.Node] = [table(_HEADER, object_rows(root, root))]
        for name, node in root.get("$defs", {}).items():
            if node.get("type") == "object":
                out.append(nodes.rubric("", "", *inline(node.get("title", name)), ids=[name]))
                out.append(paragraph(_text(node)))
                out.append(table(_HEADER, object_rows(node, root)))
        return out

    def _events(self, root: Schema) -> list[nodes.Node]:
        keep = self.options.get("prefixes", "").split()
        drop = self.options.get("exclude", "").split()
        if "common" in self.options:
            return [table(_HEADER, object_rows(root, root))]
        out: list[nodes.Node] = []
        for names, then in grouped(events(root)):
            if (keep and not _starts(names, keep)) or (drop and _starts(names, drop)):
                continue
            out.extend(self._event(names, then, root))
        return out

    def _event(self, names: Sequence[str], then: Schema, root: Schema) -> list[nodes.Node]:
        title = ", ".join(f"`{name}`" for name in names)
        ids = [nodes.make_id(f"event-{name}") for name in names]
        rubric = nodes.rubric("", "", *inline(title), ids=ids)
        out: list[nodes.Node] = [rubric, paragraph(_text(then))]
        rows = event_rows(then, root)
        out.append(
            table(_HEADER, rows) if rows else paragraph("No fields besides the common ones.")
        )
        return out


def _starts(names: Sequence[str], prefixes: Sequence[str]) -> bool:
    return any(name.startswith(prefix) for name in names for prefix in prefixes)


def setup(app: Sphinx) -> None:
    """Register ``{json-schema}``."""
    app.add_directive("json-schema", JsonSchemaDirective)
