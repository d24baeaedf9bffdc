"""Server-Sent Events, bytes in, events out: how a streaming OpenAI-compatible server talks.

A streamed completion arrives as `data: {json}\\n\\n` frames ending with `data: [DONE]`, but TCP
cuts the bytes wherever it likes: inside a line, inside a UTF-8 character, between the CR and
LF of a CRLF. `SSEParser.feed` takes any such chunk and returns the events it completed, following
the WHATWG rules (lines end in CRLF, LF or CR; `:` starts a comment; `data` lines accumulate with
newlines; an event is dispatched at a blank line; a BOM at the start is dropped).

Servers also misbehave in ways a profiler must record, not crash on: an `event: error` frame, a
`data: {"error": ...}` frame mid-stream, or a bare JSON error body where frames were expected.
Lines that are not `field: value` are kept as a `raw` event, so such a body is still seen.
Pure: no I/O, no clock.
"""

from __future__ import annotations

import codecs
import json
from dataclasses import dataclass

_FIELDS = ("event", "data", "id", "retry")


@dataclass(frozen=True)
class SSEEvent:
    """One dispatched event. `event` is "message" unless the server named it; `raw` holds lines
    that were not SSE fields (a JSON error body sent where frames were expected)."""

    data: str
    event: str = "message"
    id: str | None = None
    retry_ms: int | None = None

    @property
    def is_done(self) -> bool:
        """The OpenAI end-of-stream sentinel `data: [DONE]`."""
        return self.data.strip() == "[DONE]"

    def json(self):
        """The data parsed as JSON, or None when it is not JSON (or is [DONE])."""
        if self.is_done:
            return None
        try:
            return json.loads(self.data)
        except ValueError:
            return None

    @property
    def error(self) -> str | None:
        """A one-line message when this event reports an error, else None.

        Recognised: `event: error`; JSON with an `error` key (OpenAI, vLLM >= 0.6, SGLang); JSON
        with `"object": "error"` (older vLLM); a JSON body with only `detail`/`message` (FastAPI)."""
        doc = self.json()
        if self.event == "error":
            return _error_text(doc) if doc is not None else (self.data.strip() or "error event")
        if not isinstance(doc, dict):
            return None
        if "error" in doc or doc.get("object") == "error":
            return _error_text(doc)
        if self.event == "raw" and ("detail" in doc or "message" in doc):
            return _error_text(doc)
        return None


def _error_text(doc) -> str:
    """The most specific message inside an error document, on one line."""
    if isinstance(doc, dict):
        inner = doc.get("error", doc)
        if isinstance(inner, dict):
            msg = inner.get("message") or inner.get("detail") or inner.get("msg") or json.dumps(inner)
        else:
            msg = inner
        code = (inner.get("code") if isinstance(inner, dict) else None) or doc.get("code")
        text = f"{msg} (code {code})" if code not in (None, "") else str(msg)
    else:
        text = str(doc)
    return " ".join(text.split())[:300]


class SSEParser:
    """Incremental parser. `feed(bytes) -> [SSEEvent]`; `close() -> [SSEEvent]` at end of stream.

    After close, `truncated` says whether the stream stopped in the middle of a `data` event."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buf = ""
        self._skip_lf = False  # the previous chunk ended in CR: an LF opening this one is the same line end
        self._started = False
        self._data: list[str] = []
        self._raw: list[str] = []
        self._event = ""
        self._last_id: str | None = None
        self._retry: int | None = None
        self.comments = 0
        self.truncated = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Parse one chunk of bytes (any size, cut anywhere); return the events it completed."""
        text = self._decoder.decode(chunk)
        return self._feed_text(text)

    def close(self) -> list[SSEEvent]:
        """End of stream: flush a partial UTF-8 sequence and a final unterminated line.

        Unlike the browser rules (which drop an event that lacks its closing blank line) the
        pending event is returned, marked by `truncated`: a last `data: [DONE]` or JSON error body
        without the blank line is still information; a frame cut mid-JSON fails `json()` anyway."""
        events = self._feed_text(self._decoder.decode(b"", final=True))
        if self._buf:
            line, self._buf = self._buf, ""
            self._line(line, events)
        if self._data:
            self.truncated = True
        self._dispatch(events)
        return events

    # ---- internals ---------------------------------------------------------------------------
    def _feed_text(self, text: str) -> list[SSEEvent]:
        if not text:
            return []
        if not self._started:
            self._started = True
            if text.startswith("\ufeff"):
                text = text[1:]
        if self._skip_lf and text.startswith("\n"):
            text = text[1:]
        self._skip_lf = False
        buf = self._buf + text
        events: list[SSEEvent] = []
        start, n = 0, len(buf)
        # Next CR and LF; once one is absent (-1) it is never searched again, so a big chunk
        # of many lines stays linear.
        cr, lf = buf.find("\r"), buf.find("\n")
        while cr >= 0 or lf >= 0:
            end = cr if lf < 0 or 0 <= cr < lf else lf
            self._line(buf[start:end], events)
            start = end + 1
            if buf[end] == "\r":
                if start == n:
                    self._skip_lf = True  # the LF of this CRLF may open the next chunk
                elif buf[start] == "\n":
                    start += 1
            if 0 <= cr < start:
                cr = buf.find("\r", start)
            if 0 <= lf < start:
                lf = buf.find("\n", start)
        self._buf = buf[start:]
        return events

    def _line(self, line: str, events: list[SSEEvent]) -> None:
        if line == "":
            self._dispatch(events)
            return
        if line.startswith(":"):
            self.comments += 1
            return
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name not in _FIELDS:
            # Not an SSE field: most likely a JSON error body where frames were expected.
            self._raw.append(line)
            return
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._last_id = value
        elif name == "retry" and value.isdigit():
            self._retry = int(value)

    def _dispatch(self, events: list[SSEEvent]) -> None:
        if self._raw:
            events.append(SSEEvent(data="\n".join(self._raw), event="raw"))
            self._raw = []
        if self._data:
            events.append(
                SSEEvent(
                    data="\n".join(self._data),
                    event=self._event or "message",
                    id=self._last_id,
                    retry_ms=self._retry,
                )
            )
        # The spec resets the data buffer and event type at each blank line, dispatched or not.
        self._data, self._event = [], ""


def parse_all(payload: bytes) -> list[SSEEvent]:
    """Parse a whole stream at once (tests, recorded streams)."""
    p = SSEParser()
    return p.feed(payload) + p.close()
