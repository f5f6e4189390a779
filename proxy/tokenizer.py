"""The BPE encoder for token counts, from the encoding shipped inside this package.

tiktoken downloads encodings on first use; many machines cannot reach that host, so the
cl100k_base ranks travel with the package and are loaded from disk.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
from importlib import resources

import tiktoken

CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
# tiktoken_ext.openai_public's cl100k_base split pattern and special tokens.
CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
CL100K_SPECIAL = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}


@functools.cache
def encoding() -> tiktoken.Encoding:
    data = resources.files("claude_bridge.proxy.data").joinpath("cl100k_base.tiktoken").read_bytes()
    if hashlib.sha256(data).hexdigest() != CL100K_SHA256:
        raise RuntimeError("the bundled cl100k_base encoding is damaged; reinstall the package")
    # `token rank` lines: split once and decoded by map, twice as fast as line by line (this is
    # most of what a `count-tokens` run takes).
    fields = data.split()
    ranks = dict(zip(map(binascii.a2b_base64, fields[0::2]), map(int, fields[1::2]), strict=True))
    return tiktoken.Encoding(
        name="cl100k_base",
        pat_str=CL100K_PATTERN,
        mergeable_ranks=ranks,
        special_tokens=CL100K_SPECIAL,
    )


# BPE over one huge piece without a space (a pasted base64 blob, a 32 MB "word") takes time
# that grows faster than its length: a minute for the largest body a client may send. Longer
# texts are counted in windows, cut before a space where there is one: exact for prose, where
# the pieces tiktoken splits into never cross such a cut, and linear in time for anything.
WINDOW = 16_384


def count_text(text: str) -> int:
    encode = encoding().encode
    total = start = 0
    while start < len(text):
        end = start + WINDOW
        if end < len(text):
            cut = text.rfind(" ", start + 1, end)
            end = cut if cut > start else end
        # Special-token text in a prompt is ordinary text to count, not a control token.
        total += len(encode(text[start:end], disallowed_special=()))
        start = end
    return total
