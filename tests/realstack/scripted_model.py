"""The scripted model: a tiny GGUF for llama.cpp whose answers are fixed by its chat template.

    python scripted_model.py OUT_DIR      # writes OUT_DIR/scripted.gguf and chat-template.jinja
                                          # (needs the `gguf` package and numpy)

A real small model answers Claude Code with text at best; it will not call a tool on cue. The
tier needs a tool call that runs, so this model is a deterministic bigram machine: its only
layer adds nothing to the residual stream (random query/key/value and feed-forward weights, zero
output projections), so the next token depends on the current token alone. Every ordinary token
is followed by end-of-turn; the last token of three generation prompts starts three scripted
answers. The chat template picks the generation prompt (Qwen3's turn and thinking markup):

- a plain turn, `<|im_start|>assistant\\n` -> a text answer;
- tools offered and TOOL_TRIGGER in the last user turn, `...assistant\\n<think>\\n` -> a
  thought, then one Bash call in the Qwen3-Coder XML format, which llama-server turns into
  `reasoning_content` and an OpenAI `tool_calls` entry;
- a tool result last, `...assistant\\n<think>\\n\\n</think>\\n\\n` (thinking skipped) -> a text
  answer closing the loop.

Each scripted answer is a single token of the vocabulary, so sampling cannot break it.
The vocabulary is cl100k_base (shipped with claude-bridge) as a GPT-2-style byte-level BPE, so
Claude Code's 50 KB prompts stay around 12k tokens and prompt processing takes a second.

The module imports numpy and gguf only in `write_model`: the tests import its constants.
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Any

TOOL_TRIGGER = "realstack-tool"
TOOL_MARKER = "realstack-tool-ok"
TOOL_COMMAND = f"echo {TOOL_MARKER}"
TEXT_ANSWER = "Hello from the scripted model."
AFTER_TOOL_ANSWER = "The tool ran and its output came back."
THINKING = "The user asked for the marker command, so I run it."
TOOL_CALL_TEXT = (
    f"{THINKING}\n</think>\n\n"
    "<tool_call>\n<function=Bash>\n<parameter=command>\n"
    f"{TOOL_COMMAND}\n</parameter>\n</function>\n</tool_call>"
)
# What the template appends to "<|im_start|>assistant\n" for each script.
PLAIN_PROMPT = ""
TOOL_PROMPT = "<think>\n"
AFTER_TOOL_PROMPT = "<think>\n\n</think>\n\n"
SCRIPTS = {
    PLAIN_PROMPT: TEXT_ANSWER,
    TOOL_PROMPT: TOOL_CALL_TEXT,
    AFTER_TOOL_PROMPT: AFTER_TOOL_ANSWER,
}

N_EMBD = 64
N_CTX = 131072
LOGIT = 10.0

# Qwen3-Coder's format (llama.cpp recognises `<tool_call>`, `<function=` and `<parameter=` and
# parses tool calls with its dedicated parser); the generation prompt picks the script.
CHAT_TEMPLATE = """\
{%- macro render_content(content) -%}
{%- if content is string -%}{{ content }}
{%- elif content is iterable -%}
{%- for part in content -%}{%- if part.text is defined -%}{{ part.text }}{%- endif -%}{%- endfor -%}
{%- endif -%}
{%- endmacro -%}
{%- if not tools is defined or tools is none -%}{%- set tools = [] -%}{%- endif -%}
{%- set ns = namespace(system='', last_text='', last_role='') -%}
{%- for message in messages if message.role == 'system' -%}
{%- set ns.system = ns.system + render_content(message.content) + '\\n' -%}
{%- endfor -%}
{%- if ns.system or tools | length > 0 -%}
{{- '<|im_start|>system\\n' + ns.system -}}
{%- if tools | length > 0 -%}
{{- '\\n# Tools\\n<tools>' -}}
{%- for tool in tools -%}{{- '\\n' + (tool | tojson) -}}{%- endfor -%}
{{- '\\n</tools>\\nTo call a tool, reply <tool_call>\\n<function=NAME>\\n' -}}
{{- '<parameter=NAME>\\nVALUE\\n</parameter>\\n</function>\\n</tool_call>' -}}
{%- endif -%}
{{- '<|im_end|>\\n' -}}
{%- endif -%}
{%- for message in messages if message.role != 'system' -%}
{%- if message.role == 'assistant' -%}
{{- '<|im_start|>assistant\\n' -}}
{%- if message.reasoning_content is defined and message.reasoning_content -%}
{{- '<think>\\n' + message.reasoning_content + '\\n</think>\\n\\n' -}}
{%- endif -%}
{{- render_content(message.content) -}}
{%- if message.tool_calls is defined and message.tool_calls -%}
{%- for tool_call in message.tool_calls -%}
{%- set call = tool_call.function if tool_call.function is defined else tool_call -%}
{{- '\\n<tool_call>\\n<function=' + call.name + '>\\n' -}}
{%- if call.arguments is mapping -%}
{%- for name, value in call.arguments | items -%}
{{- '<parameter=' + name + '>\\n' -}}
{{- (value | tojson) if value is not string else value -}}
{{- '\\n</parameter>\\n' -}}
{%- endfor -%}
{%- else -%}{{- call.arguments | string -}}
{%- endif -%}
{{- '</function>\\n</tool_call>' -}}
{%- endfor -%}
{%- endif -%}
{{- '<|im_end|>\\n' -}}
{%- elif message.role == 'tool' -%}
{{- '<|im_start|>user\\n<tool_response>\\n' + render_content(message.content) -}}
{{- '\\n</tool_response><|im_end|>\\n' -}}
{%- else -%}
{{- '<|im_start|>' + message.role + '\\n' + render_content(message.content) + '<|im_end|>\\n' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
{%- for message in messages if message.role != 'system' -%}
{%- set ns.last_role = message.role -%}
{%- set ns.last_text = render_content(message.content) -%}
{%- endfor -%}
{{- '<|im_start|>assistant\\n' -}}
{%- if ns.last_role == 'tool' -%}{{- @AFTER_TOOL_PROMPT@ -}}
{%- elif tools | length > 0 and @TOOL_TRIGGER@ in ns.last_text -%}{{- @TOOL_PROMPT@ -}}
{%- else -%}{{- @PLAIN_PROMPT@ -}}
{%- endif -%}
{%- endif -%}
"""


def _jinja_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
    return f"'{escaped}'"


for _name in ("TOOL_TRIGGER", "PLAIN_PROMPT", "TOOL_PROMPT", "AFTER_TOOL_PROMPT"):
    CHAT_TEMPLATE = CHAT_TEMPLATE.replace(f"@{_name}@", _jinja_string(globals()[_name]))

# Token types in GGUF (llama.cpp's llama_token_type).
NORMAL, CONTROL = 1, 3


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (BPE vocabularies use it)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {byte: chr(char) for byte, char in zip(printable, chars, strict=True)}


def load_ranks(path: Path) -> list[bytes]:
    """cl100k_base's tokens in rank order (rank = token id = merge priority)."""
    ranks: dict[int, bytes] = {}
    for line in path.read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[int(rank)] = base64.b64decode(token)
    assert sorted(ranks) == list(range(len(ranks))), "ranks are not contiguous"
    return [ranks[i] for i in range(len(ranks))]


def merges_from_ranks(tokens: list[bytes]) -> list[tuple[bytes, bytes]]:
    """Recover BPE merges from tiktoken ranks: a token of rank r is the merge of the two parts
    that byte-pair encoding with ranks below r leaves (as tiktoken's own conversion does)."""
    rank_of = {token: rank for rank, token in enumerate(tokens)}
    merges: list[tuple[bytes, bytes]] = []
    for rank, token in enumerate(tokens):
        if len(token) < 2:
            continue
        parts = [bytes([b]) for b in token]
        while len(parts) > 2:
            best: tuple[int, int] | None = None
            for i in range(len(parts) - 1):
                pair_rank = rank_of.get(parts[i] + parts[i + 1])
                if (
                    pair_rank is not None
                    and pair_rank < rank
                    and (best is None or pair_rank < best[0])
                ):
                    best = (pair_rank, i)
            if best is None:
                break
            i = best[1]
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        if len(parts) == 2:
            merges.append((parts[0], parts[1]))
    return merges


def cl100k_path() -> Path:
    from importlib import resources

    return Path(str(resources.files("claude_bridge.proxy.data").joinpath("cl100k_base.tiktoken")))


def write_model(out_dir: Path) -> None:
    import gguf
    import numpy as np

    byte_char = bytes_to_unicode()

    def encode(token: bytes) -> str:
        return "".join(byte_char[b] for b in token)

    base = load_ranks(cl100k_path())
    tokens = [encode(t) for t in base]
    types = [NORMAL] * len(tokens)
    merges = [f"{encode(a)} {encode(b)}" for a, b in merges_from_ranks(base)]

    def add(text: str, kind: int) -> int:
        tokens.append(text)
        types.append(kind)
        return len(tokens) - 1

    eot = add("<|endoftext|>", CONTROL)
    add("<|im_start|>", CONTROL)
    im_end = add("<|im_end|>", CONTROL)
    answers = {prompt: add(encode(text.encode()), NORMAL) for prompt, text in SCRIPTS.items()}
    assert len(set(tokens)) == len(tokens), "duplicate token texts"

    # The last token of each generation prompt, as llama.cpp will tokenize it (the special
    # token <|im_start|> splits the text just before "assistant").
    from claude_bridge.proxy.tokenizer import encoding

    cl100k = encoding()
    last = {prompt: cl100k.encode(f"assistant\n{prompt}")[-1] for prompt in SCRIPTS}
    assert len(set(last.values())) == len(last), f"ambiguous generation prompts: {last}"
    # (current token, next token): everything else is followed by <|im_end|>.
    script = [(last[prompt], answers[prompt]) for prompt in SCRIPTS]
    script += [(answer, im_end) for answer in answers.values()]
    n_vocab = len(tokens)
    rng = np.random.default_rng(20261124)
    embed = np.zeros((n_vocab, N_EMBD), dtype=np.float32)
    embed[:, 0] = 1.0  # ordinary tokens: only the "end the turn" direction
    output = np.zeros((n_vocab, N_EMBD), dtype=np.float32)
    output[im_end, 0] = LOGIT
    for slot, (current, following) in enumerate(script, start=1):
        embed[current] = 0.0
        embed[current, slot] = 1.0
        output[following, slot] = LOGIT

    def random(*shape: int) -> Any:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    ones = np.ones(N_EMBD, dtype=np.float32)
    zeros = np.zeros((N_EMBD, N_EMBD), dtype=np.float32)

    path = out_dir / "scripted.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("claude-bridge scripted model")
    writer.add_context_length(N_CTX)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(1)
    writer.add_feed_forward_length(N_EMBD)
    writer.add_head_count(1)
    writer.add_head_count_kv(1)
    writer.add_rope_dimension_count(N_EMBD)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("llama-bpe")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(eot)
    writer.add_eos_token_id(im_end)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)
    writer.add_tensor("token_embd.weight", embed)
    writer.add_tensor("output_norm.weight", ones)
    writer.add_tensor("output.weight", output)
    writer.add_tensor("blk.0.attn_norm.weight", ones)
    writer.add_tensor("blk.0.attn_q.weight", random(N_EMBD, N_EMBD))
    writer.add_tensor("blk.0.attn_k.weight", random(N_EMBD, N_EMBD))
    writer.add_tensor("blk.0.attn_v.weight", random(N_EMBD, N_EMBD))
    writer.add_tensor("blk.0.attn_output.weight", zeros)
    writer.add_tensor("blk.0.ffn_norm.weight", ones)
    writer.add_tensor("blk.0.ffn_gate.weight", random(N_EMBD, N_EMBD))
    writer.add_tensor("blk.0.ffn_up.weight", random(N_EMBD, N_EMBD))
    writer.add_tensor("blk.0.ffn_down.weight", zeros)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    (out_dir / "chat-template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")


if __name__ == "__main__":
    write_model(Path(sys.argv[1]))
