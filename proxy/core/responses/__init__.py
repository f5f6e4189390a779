"""The OpenAI Responses API (`POST /v1/responses`) as an upstream dialect (PROTOCOL.md 10).

What its dialect (`core/dialects/responses.py`) calls, each the counterpart of the Chat
Completions module beside it:

* `request.translate_request(request, options)` -> `OpenAIRequest` (as `core.request`);
* `reply.translate_reply(response, ctx, output_estimate, scope=...)` -> Anthropic message
  (as `core.response.translate_response`);
* `stream.ResponsesStreamTranslator(ctx, scope=...)`: the `StreamTranslator` interface over the
  Responses events;
* `upstreams`: URLs, and which models and servers speak only or also this dialect.

`scope` names the upstream a thinking block's carried reasoning belongs to (`carrier`): the
request side takes it from `options.profile.name`, so the reply side must be given the same.
"""
