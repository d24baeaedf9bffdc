"""Text <-> token ids for the runtime: a byte-level tokenizer, or a model's own tokenizer.json.

Random-weight models have no tokenizer of their own, so the runtime falls back to bytes: ids
0..255 are the UTF-8 bytes of the text. A random model also emits ids above 255, which no byte
names; those render as a deterministic pseudo-word (" kobaru"), so output text is stable and
readable. With real weights, `load_tokenizer(folder)` uses the folder's tokenizer.json through the
`tokenizers` library. Both offer `encode`, `decode` and an incremental `stream()` decoder that
never splits a UTF-8 character across streamed chunks, so the streamed text equals the whole text.

Chat messages become one prompt through a plain template ("role: content" lines, then
"assistant:"); chat templates in Jinja (tokenizer_config.json) are not interpreted.
"""

from __future__ import annotations

import codecs
from pathlib import Path

from planner.errors import BadInput

_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


def pseudo_word(token_id: int) -> str:
    """A space and 2-4 consonant-vowel syllables spelling `token_id` in base 70 (id >= 256)."""
    n = token_id - 256
    syllables = []
    while True:
        n, r = divmod(n, len(_CONSONANTS) * len(_VOWELS))
        syllables.append(_CONSONANTS[r // len(_VOWELS)] + _VOWELS[r % len(_VOWELS)])
        if n == 0:
            break
    while len(syllables) < 2:
        syllables.append("ra")
    return " " + "".join(syllables)


class ByteTokenizer:
    """UTF-8 bytes as ids 0..255; ids 256..vocab-1 decode to pseudo-words. No EOS."""

    name = "bytes"
    eos_id = None

    def __init__(self, vocab_size: int):
        if vocab_size < 256:
            raise BadInput(f"byte-level tokenizer needs a vocab of at least 256 ids, the model has {vocab_size}")
        self.vocab_size = vocab_size

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def _bytes(self, token_id: int) -> bytes:
        return bytes([token_id]) if token_id < 256 else pseudo_word(token_id).encode()

    def decode(self, ids: list[int]) -> str:
        return b"".join(self._bytes(i) for i in ids).decode("utf-8", errors="replace")

    def stream(self) -> "_ByteStream":
        return _ByteStream(self)


class _ByteStream:
    """Feed ids one at a time; get text back only once its UTF-8 characters are complete."""

    def __init__(self, tok: ByteTokenizer):
        self.tok = tok
        self.dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        return self.dec.decode(self.tok._bytes(token_id))

    def flush(self) -> str:
        return self.dec.decode(b"", final=True)


class HFTokenizer:
    """A tokenizer.json through the `tokenizers` library."""

    name = "tokenizer.json"

    def __init__(self, path: str | Path):
        from tokenizers import Tokenizer

        try:
            self.tok = Tokenizer.from_file(str(path))
        except Exception as e:  # the library raises a bare Exception on a malformed file
            raise BadInput(f"{path}: cannot load tokenizer: {e}") from None
        self.vocab_size = self.tok.get_vocab_size()
        self.eos_id = None
        for candidate in ("</s>", "<|end_of_text|>", "<|endoftext|>", "<|eot_id|>", "<|im_end|>"):
            tid = self.tok.token_to_id(candidate)
            if tid is not None:
                self.eos_id = tid
                break

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)

    def stream(self) -> "_HFStream":
        return _HFStream(self)


class _HFStream:
    """Decode the growing id list and emit what was added; hold back a trailing U+FFFD, which
    means a multi-byte character is still incomplete."""

    def __init__(self, tok: HFTokenizer):
        self.tok, self.ids, self.sent = tok, [], 0

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        text = self.tok.decode(self.ids)
        if text.endswith("\ufffd"):
            return ""
        out, self.sent = text[self.sent:], len(text)
        return out

    def flush(self) -> str:
        text = self.tok.decode(self.ids)
        out, self.sent = text[self.sent:], len(text)
        return out


def load_tokenizer(path: str | Path | None, vocab_size: int):
    """tokenizer.json at `path` (a file or a folder holding one), else the byte-level tokenizer."""
    if path:
        p = Path(path)
        if p.is_dir():
            p = p / "tokenizer.json"
        if not p.exists():
            raise BadInput(f"{p}: tokenizer file not found")
        return HFTokenizer(p)
    return ByteTokenizer(vocab_size)


def chat_prompt(messages: list[dict]) -> str:
    """The plain chat template: one 'role: content' line per message, then 'assistant:'."""
    lines = []
    for m in messages:
        content = m["content"]
        if isinstance(content, list):  # OpenAI content parts: keep the text ones
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        lines.append(f"{m['role']}: {content}")
    lines.append("assistant:")
    return "\n".join(lines)
