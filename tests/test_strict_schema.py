"""Strict structured outputs (PROTOCOL.md 13): the strict-mode form of a client's schema, the
nulls it added taken out of the answer again, and both wired into the Chat Completions
translation (the Responses dialect's goldens in test_responses_dialect.py cover it there).

Then the shapes real clients send (tests/data/structured_outputs, one file a client: the
request as it goes on the wire, the answer a strict upstream writes to the strict form, what
the client must receive), through claude-bridge on loopback in both translated dialects, JSON
and streamed: the TypeScript SDK's `messages.parse` with `zodOutputFormat` (zod 4's
`toJSONSchema` then the SDK's `transformJSONSchema`, `$schema` left in the description), Vercel
AI's `generateObject` (zod 4 draft-7 schema in the beta `output_format`) and a `strict` tool,
LangChain's `with_structured_output(method="json_schema")` (pydantic's schema through the
anthropic SDK's `transform_schema`) and `bind_tools(strict=True)`. Each goes upstream with
`strict: true` and a schema strict mode takes (every property required, every object closed,
no keyword it refuses), and comes back satisfying the client's own schema.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from conftest import Bridge, bridge_settings, make_http, start_bridge
from responses_upstream import call_item, message_item, response, stream
from shapes import content_blocks
from upstream import DONE, FakeUpstream, JSONReply, SSEReply, chunk, completion, text_stream
from upstream import tool_call as chat_call

from claude_bridge.proxy.core.checker import check_stream
from claude_bridge.proxy.core.dialects.chat import CHAT
from claude_bridge.proxy.core.nulls import AddedNulls, NullRemovingSource
from claude_bridge.proxy.core.providers import by_name
from claude_bridge.proxy.core.request import OpenAIRequest, RequestOptions, translate_request
from claude_bridge.proxy.core.response import translate_response
from claude_bridge.proxy.core.sse import SSEDecoder
from claude_bridge.proxy.core.stream import StreamTranslator, run_sse
from claude_bridge.proxy.core.strict import (
    STRING_FORMATS,
    allows_null,
    remove_added_nulls,
    remove_added_nulls_text,
    strict_schema,
)
from claude_bridge.proxy.core.validation import parse_body
from claude_bridge.proxy.models.anthropic import MessagesRequest
from claude_bridge.proxy.models.openai import ChatCompletion

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "nickname": {"type": "string"}},
    "required": ["name"],
}


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    form = strict_schema(schema)
    assert form.schema is not None, form.problem
    return form.schema


def test_optional_property_becomes_required_and_nullable() -> None:
    form = strict_schema(PERSON)
    assert form.added_nulls
    assert form.schema == {
        "type": "object",
        "properties": {"name": {"type": "string"}, "nickname": {"type": ["string", "null"]}},
        "required": ["name", "nickname"],
        "additionalProperties": False,
    }
    assert PERSON["required"] == ["name"], "the original is not changed"
    answer = {"name": "Alice", "nickname": None}
    assert remove_added_nulls(answer, PERSON) == {"name": "Alice"}
    assert remove_added_nulls({"name": "A", "nickname": "Al"}, PERSON) == {
        "name": "A",
        "nickname": "Al",
    }


def test_an_already_strict_schema_goes_unchanged() -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}, "n": {"type": "integer"}},
        "required": ["n", "answer"],
        "additionalProperties": False,
    }
    form = strict_schema(schema)
    assert form.schema == schema and not form.added_nulls


def test_nested_objects_and_arrays() -> None:
    schema = {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"id": {"type": "integer"}, "note": {"type": "string"}},
                    "required": ["id"],
                },
                "minItems": 1,
                "uniqueItems": True,
            },
            "meta": {
                "type": "object",
                "properties": {"source": {"type": "string", "format": "uri"}},
            },
        },
        "required": ["items"],
    }
    strict = _strict(schema)
    item = strict["properties"]["items"]["items"]
    assert item["required"] == ["id", "note"] and item["additionalProperties"] is False
    assert item["properties"]["note"] == {"type": ["string", "null"]}
    assert strict["properties"]["items"]["minItems"] == 1
    # Constraints strict mode refuses move into the description, where the model reads them.
    assert strict["properties"]["items"]["description"] == "{uniqueItems: true}"
    assert strict["properties"]["meta"]["type"] == ["object", "null"]
    source = strict["properties"]["meta"]["properties"]["source"]
    assert source == {"type": ["string", "null"], "description": '{format: "uri"}'}
    answer = {"items": [{"id": 1, "note": None}, {"id": 2, "note": "x"}], "meta": {"source": None}}
    assert remove_added_nulls(answer, schema) == {
        "items": [{"id": 1}, {"id": 2, "note": "x"}],
        "meta": {},
    }


def test_any_of_enum_and_const() -> None:
    schema = {
        "type": "object",
        "properties": {
            "shape": {
                "anyOf": [
                    {"type": "object", "properties": {"r": {"type": "number"}}, "required": ["r"]},
                    {
                        "type": "object",
                        "properties": {"w": {"type": "number"}, "h": {"type": "number"}},
                        "required": ["w"],
                    },
                ]
            },
            "color": {"type": "string", "enum": ["red", "blue"]},
            "kind": {"const": "shape"},
            "maybe": {"type": ["string", "null"]},
        },
        "required": ["shape"],
    }
    strict = _strict(schema)
    properties = strict["properties"]
    assert properties["color"] == {"type": ["string", "null"], "enum": ["red", "blue", None]}
    assert properties["kind"] == {"anyOf": [{"type": "string", "const": "shape"}, {"type": "null"}]}
    assert properties["maybe"] == {"type": ["string", "null"]}  # nullable already: as it was
    assert properties["shape"]["anyOf"][1]["properties"]["h"] == {"type": ["number", "null"]}
    answer = {
        "shape": {"w": 2, "h": None},
        "color": None,
        "kind": None,
        "maybe": None,
    }
    # `maybe` was nullable in the client's schema: its null is the model's answer, kept.
    assert remove_added_nulls(answer, schema) == {"shape": {"w": 2}, "maybe": None}


def test_refs_and_recursion() -> None:
    schema = {
        "type": "object",
        "properties": {
            "root": {"$ref": "#/$defs/Node"},
            "label": {"$ref": "#/$defs/Label", "description": "what it is called"},
        },
        "required": ["root"],
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {
                    "value": {"type": "integer"},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
                    "parent": {"$ref": "#/$defs/Node"},
                },
                "required": ["value", "children"],
            },
            "Label": {"type": "string", "maxLength": 20},
        },
    }
    strict = _strict(schema)
    node = strict["$defs"]["Node"]
    assert node["properties"]["parent"] == {"anyOf": [{"$ref": "#/$defs/Node"}, {"type": "null"}]}
    assert node["properties"]["children"]["items"] == {"$ref": "#/$defs/Node"}
    assert strict["properties"]["root"] == {"$ref": "#/$defs/Node"}
    # A description beside a $ref is dropped: strict mode takes only a bare $ref there.
    assert strict["properties"]["label"] == {"anyOf": [{"$ref": "#/$defs/Label"}, {"type": "null"}]}
    assert strict["$defs"]["Label"] == {"type": "string", "description": "{maxLength: 20}"}
    answer = {
        "root": {
            "value": 1,
            "children": [{"value": 2, "children": [], "parent": None}],
            "parent": None,
        },
        "label": None,
    }
    assert remove_added_nulls(answer, schema) == {
        "root": {"value": 1, "children": [{"value": 2, "children": []}]}
    }


def test_ref_with_siblings_is_inlined_and_all_of_merged() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"$ref": "#/definitions/Base", "required": ["x", "y"]},
            "b": {
                "allOf": [
                    {"$ref": "#/definitions/Base"},
                    {"properties": {"z": {"type": "boolean"}}},
                ]
            },
        },
        "required": ["a", "b"],
        "definitions": {
            "Base": {
                "type": "object",
                "properties": {"x": {"type": "string"}, "y": {"type": "string"}},
            }
        },
    }
    strict = _strict(schema)
    assert strict["properties"]["a"]["properties"] == {
        "x": {"type": "string"},
        "y": {"type": "string"},
    }
    assert strict["properties"]["b"]["required"] == ["x", "y", "z"]
    assert strict["properties"]["b"]["properties"]["z"] == {"type": ["boolean", "null"]}
    answer = {"a": {"x": "1", "y": "2"}, "b": {"x": None, "y": "2", "z": None}}
    assert remove_added_nulls(answer, schema) == {"a": {"x": "1", "y": "2"}, "b": {"y": "2"}}


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ({"type": "object", "additionalProperties": {"type": "string"}}, "open properties"),
        ({"type": "object", "properties": {"m": {"type": "object"}}}, "any properties"),
        ({"type": "object", "properties": {"v": {}}}, "without a type"),
        ({"type": "object", "properties": {"v": True}}, "any value"),
        ({"type": "array", "items": {"type": "string"}}, "root is not an object"),
        ({"anyOf": [PERSON, {"type": "null"}]}, "root is not an object"),
        ({"type": "object", "properties": {"r": {"$ref": "other.json#/X"}}}, "not a local"),
        ({"type": "object", "properties": {"l": {"type": "array"}}}, "items"),
        (
            {
                "type": "object",
                "properties": {"p": {"type": "object", "patternProperties": {"^x": {}}}},
            },
            "open",
        ),
    ],
)
def test_schemas_without_a_strict_form(schema: dict[str, Any], problem: str) -> None:
    form = strict_schema(schema)
    assert form.schema is None and problem in form.problem


def test_answer_text() -> None:
    assert remove_added_nulls_text('{"name":"A","nickname":null}', PERSON) == '{"name":"A"}'
    assert remove_added_nulls_text('{"name": "A"}', PERSON) == '{"name": "A"}', "kept as sent"
    assert remove_added_nulls_text("not json", PERSON) == "not json"


def test_allows_null() -> None:
    root = {"$defs": {"N": {"type": "null"}}}
    assert allows_null({"$ref": "#/$defs/N"}, root)
    assert allows_null({"oneOf": [{"type": "string"}, {"const": None}]}, root)
    assert not allows_null({"enum": ["a"]}, root)
    assert not allows_null({"type": "object", "properties": {}}, root)


# -- Chat Completions ------------------------------------------------------------------------


def _chat(body: dict[str, Any], profile: str = "openai") -> OpenAIRequest:
    request = parse_body(
        json.dumps({"model": "m", "max_tokens": 100, **body}).encode(), MessagesRequest
    )
    return translate_request(request, RequestOptions(model="gpt-4o", profile=by_name(profile)))


STRICT_TOOL = {"name": "read_file", "strict": True, "input_schema": PERSON}
HI = [{"role": "user", "content": "hi"}]


def test_chat_strict_tool_and_output_format() -> None:
    sent = _chat(
        {
            "tools": [STRICT_TOOL, {"name": "bash", "input_schema": PERSON}],
            "output_config": {"format": {"type": "json_schema", "schema": PERSON}},
            "messages": HI,
        }
    )
    strict, loose = sent.body["tools"]
    assert strict["function"]["strict"] is True
    assert strict["function"]["parameters"] == strict_schema(PERSON).schema
    assert loose["function"] == {"name": "bash", "parameters": PERSON}, "no strict: as sent"
    json_schema = sent.body["response_format"]["json_schema"]
    assert json_schema == {"name": "output", "schema": strict_schema(PERSON).schema, "strict": True}
    assert sent.added_nulls.tools == {"read_file": PERSON} and sent.added_nulls.output == PERSON


def test_chat_without_a_strict_form_sends_strict_false() -> None:
    open_map = {"type": "object", "additionalProperties": {"type": "string"}}
    sent = _chat(
        {
            "tools": [{**STRICT_TOOL, "input_schema": open_map}],
            "output_format": {"type": "json_schema", "schema": open_map},  # the beta field
            "messages": HI,
        }
    )
    assert sent.body["tools"][0]["function"] == {"name": "read_file", "parameters": open_map}
    assert sent.body["response_format"]["json_schema"]["strict"] is False
    assert sent.body["response_format"]["json_schema"]["schema"] == open_map
    assert not sent.added_nulls
    assert sent.dropped == [
        "strict mode for tool read_file (an object with open properties)",
        "strict mode for the output format (an object with open properties)",
    ]


def test_chat_reply_and_stream_lose_the_added_nulls() -> None:
    """Through the chat dialect's own reply context: the message (`translate_response`) and
    the stream (`Dialect.events`) give the client an answer to its own schema."""
    request = parse_body(
        json.dumps(
            {"model": "m", "max_tokens": 100, "tools": [STRICT_TOOL], "messages": HI}
        ).encode(),
        MessagesRequest,
    )
    options = RequestOptions(model="gpt-4o", profile=by_name("openai"))
    ctx = CHAT.build({}, request, options, "msg_1").ctx
    assert ctx.added_nulls.tools == {"read_file": PERSON}
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "read_file", "arguments": '{"name":"A","nickname":null}'},
    }
    completion = ChatCompletion.model_validate(
        {
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": '{"nickname":null}',
                        "tool_calls": [call],
                    },
                    "finish_reason": "tool_calls",
                }
            ]
        }
    )
    assert translate_response(completion, ctx)["content"] == [
        {"type": "text", "text": '{"nickname":null}'},  # no output format: text untouched
        {"type": "tool_use", "id": "call_1", "name": "read_file", "input": {"name": "A"}},
    ]
    chunks = [
        {"choices": [{"index": 0, "delta": {"content": "Reading."}}]},
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_1",
                                "function": {"name": "read_file", "arguments": '{"name":"A",'},
                            }
                        ]
                    },
                }
            ]
        },
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [{"index": 0, "function": {"arguments": '"nickname":null}'}}]
                    },
                }
            ]
        },
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    ]
    body = b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks) + b"data: [DONE]\n\n"
    events = run_sse(CHAT.events(ctx, options), body)
    assert check_stream(events) == []
    assert content_blocks(events) == [
        {"type": "text", "text": "Reading."},
        {"type": "tool_use", "id": "call_1", "name": "read_file", "input": {"name": "A"}},
    ]
    plain = run_sse(NullRemovingSource(StreamTranslator(ctx), AddedNulls()), body)
    assert content_blocks(plain)[1]["input"] == {"name": "A", "nickname": None}


# -- the shapes real clients send, end to end ----------------------------------------------

CLIENTS = Path(__file__).parent / "data" / "structured_outputs"
CLIENT_CASES = sorted(p.stem for p in CLIENTS.glob("*.json"))
DIALECTS = ("openai", "responses")
# What OpenAI's strict mode refuses in a schema (PROTOCOL.md 13.2); `oneOf` and `$schema` too.
REFUSED = {"allOf", "oneOf", "not", "if", "then", "else", "default", "$schema"}
REFUSED |= {"dependentRequired", "dependentSchemas", "patternProperties", "propertyNames"}


def strict_problems(node: Any, where: str = "#") -> list[str]:
    """Why OpenAI's strict mode would refuse `node`: nothing for a schema it takes."""
    if not isinstance(node, dict):
        return [f"{where}: not a schema"]
    problems = [f"{where}: {key}" for key in sorted(set(node) & REFUSED)]
    kinds = node.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if "object" in kinds or "properties" in node:
        properties = node.get("properties", {})
        if node.get("additionalProperties") is not False:
            problems.append(f"{where}: an open object")
        if set(node.get("required", ())) != set(properties):
            problems.append(f"{where}: not every property required")
        for name, sub in properties.items():
            problems += strict_problems(sub, f"{where}/properties/{name}")
    if "format" in node and node["format"] not in STRING_FORMATS:
        problems.append(f"{where}: format {node['format']}")
    if "items" in node:
        problems += strict_problems(node["items"], f"{where}/items")
    for number, branch in enumerate(node.get("anyOf", ())):
        problems += strict_problems(branch, f"{where}/anyOf/{number}")
    for key in ("$defs", "definitions"):
        for name, sub in node.get(key, {}).items():
            problems += strict_problems(sub, f"{where}/{key}/{name}")
    return problems


def test_the_strict_check_finds_what_strict_mode_refuses() -> None:
    assert strict_problems(strict_schema(PERSON).schema) == []
    assert strict_problems(PERSON) == ["#: an open object", "#: not every property required"]
    assert strict_problems({**_strict(PERSON), "default": {}}) == ["#: default"]


@pytest.fixture(scope="module")
def dialect_bridges(upstream_server: FakeUpstream) -> Iterator[dict[str, Bridge]]:
    bridges = {m: start_bridge(bridge_settings(upstream_server.base_url, mode=m)) for m in DIALECTS}
    yield bridges
    for bridge in bridges.values():
        bridge.stop()


def _upstream_answer(
    mode: str, streamed: bool, answer: Any, tool: dict[str, Any] | None
) -> JSONReply | SSEReply:
    """The strict answer as each dialect's upstream gives it: text, or a call of `tool`."""
    text = json.dumps(answer)
    if mode == "responses":
        item = call_item("call_s1", tool["name"], text) if tool else message_item(text)
        return SSEReply(stream([item])) if streamed else JSONReply(response([item]))
    if not streamed:
        if tool is None:
            return JSONReply(completion(text))
        calls = [chat_call("call_s1", tool["name"], text)]
        return JSONReply(completion(None, tool_calls=calls, finish_reason="tool_calls"))
    half = len(text) // 2
    if tool is None:
        return SSEReply(text_stream([text[:half], text[half:]]))
    first = {"index": 0, **chat_call("call_s1", tool["name"], text[:half])}
    rest = {"index": 0, "function": {"arguments": text[half:]}}
    return SSEReply(
        [
            chunk({"role": "assistant", "tool_calls": [first]}),
            chunk({"tool_calls": [rest]}),
            chunk(finish_reason="tool_calls"),
            DONE,
        ]
    )


def _sent(body: dict[str, Any], mode: str, tool: dict[str, Any] | None) -> tuple[Any, Any]:
    """(schema, strict) of what the upstream got for the client's strict tool or format."""
    if tool is not None:
        sent = next(t for t in body["tools"] if (t.get("function") or t)["name"] == tool["name"])
        sent = sent.get("function", sent)
        return sent["parameters"], sent.get("strict")
    fmt = body["response_format"]["json_schema"] if mode == "openai" else body["text"]["format"]
    return fmt["schema"], fmt["strict"]


@pytest.mark.parametrize("streamed", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("mode", DIALECTS)
@pytest.mark.parametrize("case", CLIENT_CASES)
def test_client_shapes_go_strict_and_come_back_to_the_clients_schema(
    dialect_bridges: dict[str, Bridge],
    upstream: FakeUpstream,
    case: str,
    mode: str,
    streamed: bool,
) -> None:
    data = json.loads((CLIENTS / f"{case}.json").read_text(encoding="utf-8"))
    body = {**data["body"], "stream": streamed}
    tool = next((t for t in body.get("tools", ()) if t.get("strict")), None)
    fmt = (body.get("output_config") or {}).get("format") or body.get("output_format")
    original = tool["input_schema"] if tool else fmt["schema"]
    assert strict_problems(original) != []  # as sent, strict mode would refuse it
    upstream.reply(_upstream_answer(mode, streamed, data["answer"], tool))
    with make_http(dialect_bridges[mode]) as http:
        answered = http.post("/v1/messages", json=body, headers=data["headers"])
    assert answered.status_code == 200, answered.text

    sent, strict = _sent(upstream.last.json, mode, tool)
    assert strict is True and strict_problems(sent) == []
    jsonschema.validate(data["answer"], sent)  # the upstream's answer is a strict one
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data["answer"], original)  # which the client would refuse as is

    if streamed:
        decoder = SSEDecoder()
        events = [json.loads(e.data) for e in decoder.decode(answered.content) + decoder.flush()]
        assert check_stream(events) == []
        blocks = content_blocks(events)
    else:
        blocks = answered.json()["content"]
    got = blocks[-1]["input"] if tool else json.loads(blocks[-1]["text"])
    assert got == data["received"]
    jsonschema.validate(got, original)
