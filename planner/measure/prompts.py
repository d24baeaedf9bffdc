"""Prompts of an exact token count, by the server's own tokenizer (planner.measure.endpoint).

Prompts are built word by word from WORDS and re-counted with the server's `/tokenize` (vLLM and
SGLang, llama.cpp and TGI dialects) until exact; without one, the usage block of each response
says what the server counted and the next prompt is aimed by it. Never guessed from characters.
Seeds carry a per-run salt, so no prefix cache shares work between requests or runs.
"""

from __future__ import annotations

import asyncio
import json
import random

# Short common English words: one token each (with the leading space) in the BPE vocabularies
# of widely served models, so a prompt's count moves by about one per word and the search for an
# exact length converges in 2-3 tries.
WORDS = tuple(
    "the of and to in is it that was for on are as with his they at be this from have or by one had "
    "not but what all were when we there can an your which their said if do will each about how up "
    "out them then she many some so these would other into has more her two like him see time could "
    "no make than first been its who now people my made over did down only way find use may water "
    "long little very after words called just where most know get through back much go good new "
    "write our me man too any day same right look think also around another came come work three "
    "word must because does part even place well such here take why help put different away again "
    "off went old number great tell men say small every found still between name should home big "
    "give air line set own under read last never us left end along while might next sound below saw".split()
)




def token_count(doc) -> int | None:
    """Token count from a /tokenize answer: vLLM/SGLang {"count"|"tokens"}, llama.cpp
    {"tokens"}, TGI [ {id, text, ...}, ... ]."""
    if isinstance(doc, dict):
        if isinstance(doc.get("count"), int):
            return doc["count"]
        if isinstance(doc.get("tokens"), list):
            return len(doc["tokens"])
    if isinstance(doc, list):
        return len(doc)
    return None


def tokenize_body(run, style: str, text: str) -> dict:
    if style == "vllm":
        if run.chat:
            return {"model": run.model, "messages": [{"role": "user", "content": text}]}
        return {"model": run.model, "prompt": text}
    # llama.cpp leaves BOS out of /tokenize unless asked; its completions count it.
    return {"content": text, "add_special": True} if style == "llama.cpp" else {"inputs": text}


async def detect_tokenizer(run) -> None:
    """Find which /tokenize dialect the server speaks. With chat, only the vLLM dialect counts the
    chat template; otherwise counts come from the usage block."""
    import aiohttp

    styles = ("vllm",) if run.chat else ("vllm", "llama.cpp", "tgi")
    for path in ("/tokenize", "/v1/tokenize"):
        for style in styles:
            try:
                text = "the cat sat on the mat"
                status, doc, _, _ = await get_json(run, run.base + path, tokenize_body(run, style, text))
                status2, doc2, _, _ = await get_json(run, run.base + path, tokenize_body(run, style, text * 4))
            except (aiohttp.ClientError, asyncio.TimeoutError):
                continue
            a, b = token_count(doc), token_count(doc2)
            if status == status2 == 200 and a and b and b > a:  # a real count grows with the text
                run.tokenizer, run.tokenize_path = style, path
                if isinstance(doc, dict) and isinstance(doc.get("max_model_len"), int):
                    run.max_model_len = doc["max_model_len"]
                return
    run.note("no /tokenize: prompt token counts come from the usage block of each response")


async def count_tokens(run, text: str) -> int | None:
    import aiohttp

    try:
        status, doc, _, _ = await get_json(run, run.base + run.tokenize_path, tokenize_body(run, run.tokenizer, text))
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return None
    return token_count(doc) if status == 200 else None


def words(seed: str, k: int) -> str:
    """k words drawn from WORDS by seed; the same seed with more words extends the same text, and
    different seeds differ from the first words, so no prefix cache hides a prefill (seeds carry
    a per-run salt: a second run against the same server must not hit the first one's cache)."""
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(k))


async def prompt(run, n: int, seed: str, exact: bool) -> tuple[str, int | None, int]:
    """A prompt of n tokens by the server's count: (text, tokenize count or None, words).

    With /tokenize and `exact`: grow or shrink the word count by the miss (about one token per
    word) and re-count, at most 8 times, keeping the closest; a few " a" pad the last gap. Without:
    reuse the word count that came closest before (the usage block then says what the server
    counted)."""
    k = run.words_for.get(n, n)
    if not (exact and run.tokenizer):
        return words(seed, k), None, k
    best = under = None  # closest so far; closest from below (to pad)
    tried = set()
    for _ in range(8):
        text = words(seed, k)
        c = await count_tokens(run, text)
        if c is None:
            return text, None, k
        if best is None or abs(c - n) < abs(best[1] - n):
            best = (text, c, k)
        if c < n and (under is None or c > under[1]):
            under = (text, c, k)
        if c == n:
            break
        tried.add(k)
        k = max(1, k + round((n - c) * k / max(c, 1)))
        if k in tried:
            k = max(1, k + (1 if c < n else -1))
            if k in tried:
                break
    run.words_for[n] = best[2]
    if best[1] != n and under is not None and n - under[1] <= 16:
        # Some words are 2-3 tokens, so the count can jump over n: pad the closest prompt below
        # it with " a" (one token in common BPE vocabularies) or "." (one byte: one token for a
        # byte-level tokenizer too).
        for pad in (" a", "."):
            padded = under[0] + pad * (n - under[1])
            c = await count_tokens(run, padded)
            if c is not None and abs(c - n) < abs(best[1] - n):
                best = (padded, c, under[2])
            if best[1] == n:
                break
    return best


async def get_json(run, url: str, body=None, timeout=None, limit: int = 1 << 24):
    """(status, parsed JSON or None, text, Server header) of a GET (body None) or POST. A pooled
    connection the server closed while idle (its keep-alive timeout, e.g. while ceilings were
    measured) fails before any byte: tried once more on a fresh one."""
    import aiohttp

    method = run.session.get if body is None else run.session.post
    kw = {} if body is None else {"json": body}
    if timeout is not None:
        kw["timeout"] = timeout
    for attempt in (1, 2):
        try:
            async with method(url, headers=run.headers(url), **kw) as r:
                text = (await r.content.read(limit)).decode("utf-8", "replace")
                try:
                    doc = json.loads(text)
                except ValueError:
                    doc = None
                return r.status, doc, text, r.headers.get("Server")
        except aiohttp.ServerDisconnectedError:
            if attempt == 2:
                raise
