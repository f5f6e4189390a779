"""JSON Schema -> OpenAI strict mode, and the model's answer back (PROTOCOL.md 13.2, 13.3).

Anthropic's structured outputs and `strict` tools take ordinary JSON Schema; OpenAI's strict
mode refuses a schema unless every property is required and every object closed. Clients
(zod, pydantic, Vercel's `generateObject`) mark fields optional all the time, so the schema
goes out in its strict equivalent: each optional property required but nullable, each object
`additionalProperties: false`, keywords strict mode rejects moved into the description (as
Anthropic's SDKs do). What cannot be said in strict mode at all (open maps, "any value", a
root that is not an object, external `$ref`s) has no equivalent: the caller sends `strict:
false` and the schema unchanged.

On the way back, `remove_added_nulls` deletes the nulls the model had to write for those
optional properties, so the client sees an answer that satisfies its own schema (`nickname`
absent rather than `null`, which `z.string().optional()` rejects).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

STRING_FORMATS = frozenset(
    ("date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid")
)
TYPES = frozenset(("object", "array", "string", "number", "integer", "boolean", "null"))
# Kept as they are; every other keyword becomes a note in the description.
_KEPT = frozenset(
    (
        "type",
        "description",
        "title",
        "enum",
        "const",
        "pattern",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minItems",
        "maxItems",
    )
)
# Dropped without a note: they say nothing the model could follow.
_SILENT = frozenset(("$schema", "$id", "$comment", "$anchor", "unevaluatedProperties"))
_DEFS = ("$defs", "definitions")
_NULL = {"type": "null"}


class _NoEquivalent(Exception):
    pass


@dataclass(frozen=True)
class StrictForm:
    """A schema's strict-mode form, or why it has none."""

    schema: dict[str, Any] | None
    """None: no strict equivalent; send `strict: false` and the original schema."""
    added_nulls: bool = False
    """Some optional property went out required and nullable: the answer needs
    `remove_added_nulls` with the original schema."""
    problem: str = ""


def strict_schema(schema: Any) -> StrictForm:
    """The strict-mode equivalent of `schema` (a copy; the original is not changed)."""
    if not isinstance(schema, Mapping):
        return StrictForm(None, problem="the schema is not an object")
    converter = _Converter(schema)
    try:
        root = converter.root()
    except _NoEquivalent as exc:
        return StrictForm(None, problem=str(exc))
    return StrictForm(root, added_nulls=converter.added_nulls)


class _Converter:
    def __init__(self, root: Mapping[str, Any]) -> None:
        self._root = root
        self.added_nulls = False

    def root(self) -> dict[str, Any]:
        node = dict(self._root)
        defs: dict[str, dict[str, Any]] = {}
        for key in _DEFS:
            value = node.pop(key, None)
            if isinstance(value, Mapping):
                defs[key] = {name: self.node(sub, ()) for name, sub in value.items()}
        out = self.node(node, ())
        if out.get("type") != "object" or "properties" not in out:
            raise _NoEquivalent("the root is not an object with properties")
        out.update(defs)
        return out

    def node(self, node: Any, refs: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(node, Mapping):
            raise _NoEquivalent("a schema that allows any value")
        node = {k: v for k, v in node.items() if k not in _SILENT}
        ref = node.pop("$ref", None)
        if ref is not None:
            return self._ref(ref, node, refs)
        self._merge_all_of(node, refs)
        one_of = node.pop("oneOf", None)
        if one_of is not None:
            if "anyOf" in node:
                raise _NoEquivalent("both anyOf and oneOf")
            node["anyOf"] = one_of  # looser, and the only union strict mode has
        if "anyOf" in node:
            return self._any_of(node, refs)
        for key in _DEFS:
            if key in node:
                raise _NoEquivalent(f"{key} below the root")
        kinds = _kinds(node)
        out: dict[str, Any] = {"type": kinds[0] if len(kinds) == 1 else kinds}
        notes: dict[str, Any] = {}
        shape: dict[str, Any] = {}
        if "object" in kinds:
            self._object(node, shape, notes, refs)
        if "array" in kinds:
            items = node.pop("items", None)
            if not isinstance(items, Mapping):
                raise _NoEquivalent("an array without one schema for its items")
            shape["items"] = self.node(items, refs)
        fmt = node.pop("format", None)
        if fmt is not None:
            (out if "string" in kinds and fmt in STRING_FORMATS else notes)["format"] = fmt
        for key, value in node.items():
            if key in _KEPT:
                out[key] = value
            elif key != "default" or value is not None:
                notes[key] = value
        out.update(shape)
        if notes:
            _describe(out, notes)
        return out

    def _ref(self, ref: Any, siblings: dict[str, Any], refs: tuple[str, ...]) -> dict[str, Any]:
        target = _resolve(ref, self._root)
        if target is None:
            raise _NoEquivalent(f"$ref {ref!r} is not a local definition")
        extra = {k: v for k, v in siblings.items() if k not in ("description", "title")}
        if not extra or ref in refs:
            # Strict mode takes a bare `$ref` (recursion included); a description beside it is
            # lost rather than risk the schema being refused.
            return {"$ref": ref}
        # Keywords beside a `$ref` refine it: the definition is inlined with them.
        return self.node({**target, **siblings}, (*refs, ref))

    def _merge_all_of(self, node: dict[str, Any], refs: tuple[str, ...]) -> None:
        members = node.pop("allOf", None)
        if members is None:
            return
        if not isinstance(members, list):
            raise _NoEquivalent("allOf is not a list")
        for member in members:
            if isinstance(member, Mapping) and "$ref" in member:
                ref = member["$ref"]
                target = _resolve(ref, self._root)
                if target is None or ref in refs:
                    raise _NoEquivalent(f"allOf with $ref {ref!r}")
                member = {**target, **{k: v for k, v in member.items() if k != "$ref"}}
            if not isinstance(member, Mapping):
                raise _NoEquivalent("allOf member is not a schema")
            for key, value in member.items():
                if key == "properties" and isinstance(node.get(key), Mapping):
                    node[key] = {**node[key], **value}
                elif key == "required" and isinstance(node.get(key), list):
                    node[key] = [*node[key], *(r for r in value if r not in node[key])]
                elif key in node and node[key] != value and key != "description":
                    raise _NoEquivalent(f"allOf members disagree on {key}")
                else:
                    node.setdefault(key, value)

    def _any_of(self, node: dict[str, Any], refs: tuple[str, ...]) -> dict[str, Any]:
        branches = node.pop("anyOf")
        if not isinstance(branches, list) or not branches:
            raise _NoEquivalent("anyOf is not a list of schemas")
        out: dict[str, Any] = {"anyOf": [self.node(b, refs) for b in branches]}
        for key in ("description", "title"):
            if key in node:
                out[key] = node.pop(key)
        node.pop("default", None)
        if node:
            raise _NoEquivalent(f"anyOf beside {', '.join(sorted(node))}")
        return out

    def _object(
        self,
        node: dict[str, Any],
        out: dict[str, Any],
        notes: dict[str, Any],
        refs: tuple[str, ...],
    ) -> None:
        properties = node.pop("properties", None) or {}
        additional = node.pop("additionalProperties", None)
        if not isinstance(properties, Mapping):
            raise _NoEquivalent("properties is not an object")
        if node.pop("patternProperties", None) or additional not in (None, False):
            raise _NoEquivalent("an object with open properties")
        if not properties and additional is None:
            raise _NoEquivalent("an object of any properties")
        required = node.pop("required", None) or []
        converted: dict[str, Any] = {}
        for name, sub in properties.items():
            strict = self.node(sub, refs)
            if name not in required and not allows_null(sub, self._root):
                strict = _nullable(strict)
                self.added_nulls = True
            converted[name] = strict
        out["properties"] = converted
        kept = [name for name in required if name in converted]  # the client's order first
        out["required"] = kept + [name for name in converted if name not in kept]
        out["additionalProperties"] = False
        for key in ("propertyNames", "minProperties", "maxProperties"):
            if key in node:
                notes[key] = node.pop(key)


def _kinds(node: dict[str, Any]) -> list[str]:
    """The node's types, inferred where JSON Schema leaves them implicit."""
    kind = node.pop("type", None)
    if kind is None:
        if "properties" in node or "additionalProperties" in node:
            kind = "object"
        elif "items" in node:
            kind = "array"
        else:
            values = node["enum"] if isinstance(node.get("enum"), list) else [node.get("const")]
            if "enum" not in node and "const" not in node:
                raise _NoEquivalent("a schema without a type")
            kind = sorted({_json_type(v) for v in values})
    kinds = [kind] if isinstance(kind, str) else kind
    if not isinstance(kinds, list) or not kinds or not set(kinds) <= TYPES:
        raise _NoEquivalent(f"type {kind!r}")
    return list(kinds)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    raise _NoEquivalent("an enum of objects or arrays")


def _describe(out: dict[str, Any], notes: dict[str, Any]) -> None:
    """Constraints strict mode refuses, kept where the model can still read them."""
    text = ", ".join(
        f"{key}: {json.dumps(value, ensure_ascii=False)}" for key, value in notes.items()
    )
    description = out.get("description")
    out["description"] = (f"{description}\n\n" if description else "") + "{" + text + "}"


def _nullable(node: dict[str, Any]) -> dict[str, Any]:
    if "anyOf" in node:
        return {**node, "anyOf": [*node["anyOf"], dict(_NULL)]}
    if "$ref" in node or "const" in node:
        return {"anyOf": [node, dict(_NULL)]}
    out = dict(node)
    kind = out["type"]
    out["type"] = [kind, "null"] if isinstance(kind, str) else [*kind, "null"]
    if "enum" in out:
        out["enum"] = [*out["enum"], None]
    return out


def _resolve(ref: Any, root: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """A local `$ref` (`#`, `#/$defs/Name`, any `#/...` pointer) in `root`."""
    if not isinstance(ref, str) or not ref.startswith("#"):
        return None
    node: Any = root
    for part in ref[1:].split("/")[1:]:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node if isinstance(node, Mapping) else None


def allows_null(node: Any, root: Mapping[str, Any], seen: frozenset[str] = frozenset()) -> bool:
    """Whether `null` is valid for `node` (a part of `root`) as the client wrote it."""
    if not isinstance(node, Mapping):
        return node is True
    ref = node.get("$ref")
    if isinstance(ref, str):
        target = _resolve(ref, root)
        return target is not None and ref not in seen and allows_null(target, root, seen | {ref})
    kind = node.get("type")
    if kind == "null" or (isinstance(kind, list) and "null" in kind):
        return True
    if "const" in node:
        return node["const"] is None
    if isinstance(node.get("enum"), list):
        return None in node["enum"]
    for key in ("anyOf", "oneOf"):
        if isinstance(node.get(key), list):
            return any(allows_null(branch, root, seen) for branch in node[key])
    if isinstance(node.get("allOf"), list):
        return all(allows_null(member, root, seen) for member in node["allOf"])
    return kind is None and not ({"properties", "items"} & set(node))


# -- the answer ------------------------------------------------------------------------------


def remove_added_nulls(value: Any, schema: Mapping[str, Any]) -> Any:
    """`value` (an answer to the strict form of `schema`) without the nulls of properties that
    `schema` has optional and not nullable: what the client's own schema expects."""
    return _clean(value, schema, schema, 0)


def remove_added_nulls_text(text: str, schema: Mapping[str, Any]) -> str:
    """The same for a JSON text; text that is not JSON, or has no such nulls, is returned as is."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    cleaned = remove_added_nulls(value, schema)
    if cleaned == value:
        return text
    return json.dumps(cleaned, ensure_ascii=False, separators=(",", ":"))


_MAX_DEPTH = 64  # recursive definitions end somewhere in any real answer


def _clean(value: Any, node: Any, root: Mapping[str, Any], depth: int) -> Any:
    node = _flatten(node, root)
    if depth > _MAX_DEPTH or node is None or not isinstance(value, dict | list):
        return value
    branches = node.get("anyOf") or node.get("oneOf")
    if isinstance(branches, list):
        branch = _branch_for(value, branches, root)
        return value if branch is None else _clean(value, branch, root, depth + 1)
    if isinstance(value, list):
        items = node.get("items")
        return [_clean(v, items, root, depth + 1) for v in value] if items else value
    properties = node.get("properties")
    if not isinstance(properties, Mapping):
        return value
    required = node.get("required") or ()
    out: dict[str, Any] = {}
    for key, item in value.items():
        sub = properties.get(key)
        if item is None and key not in required and sub is not None and not allows_null(sub, root):
            continue  # a null the strict form added
        out[key] = _clean(item, sub, root, depth + 1)
    return out


def _flatten(node: Any, root: Mapping[str, Any]) -> dict[str, Any] | None:
    """`node` with its `$ref`s followed and its `allOf` merged, as the converter saw it."""
    seen: set[str] = set()
    while isinstance(node, Mapping) and isinstance(node.get("$ref"), str):
        ref = node["$ref"]
        if ref in seen:
            return None
        seen.add(ref)
        target = _resolve(ref, root)
        if target is None:
            return None
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    if not isinstance(node, Mapping):
        return None
    members = node.get("allOf")
    if not isinstance(members, list):
        return dict(node)
    merged = {k: v for k, v in node.items() if k != "allOf"}
    for member in members:
        flat = _flatten(member, root) or {}
        for key, value in flat.items():
            if key == "properties" and isinstance(merged.get(key), Mapping):
                merged[key] = {**merged[key], **value}
            elif key == "required" and isinstance(merged.get(key), list):
                merged[key] = [*merged[key], *value]
            else:
                merged.setdefault(key, value)
    return merged


def _branch_for(value: Any, branches: list[Any], root: Mapping[str, Any]) -> Any:
    """The anyOf branch an answer took: strict objects carry every key, so the branch whose
    properties are exactly the answer's keys, else one that has them all."""
    flat = [b for b in (_flatten(b, root) for b in branches) if b is not None]
    if isinstance(value, list):
        return next((b for b in flat if "items" in b), None)
    keys = set(value)
    shaped = [b for b in flat if isinstance(b.get("properties"), Mapping)]
    exact = [b for b in shaped if set(b["properties"]) == keys]
    wider = [b for b in shaped if keys <= set(b["properties"])]
    found = exact or wider
    return found[0] if found else None
