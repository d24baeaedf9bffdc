"""The one small exception family the CLI catches and shows as a single red line.

Every user mistake is raised as BadInput (exit code 2) naming the file, field and value; a
request that physics or the catalog cannot meet is Infeasible (exit code 3). Anything else is a
bug and may show a traceback.

`shown(value)` is how a message quotes a user's value: at most MAX_SHOWN characters of its repr,
computed with bounded work (a YAML alias bomb is a few KB of text but billions of elements once
expanded; its full repr would be a 72-million-character error line).
"""

import reprlib
from contextlib import contextmanager

#: Characters of a bad value an error message quotes at most.
MAX_SHOWN = 200


class PlannerError(Exception):
    exit_code = 1


class BadInput(PlannerError):
    """The user gave something we cannot use: say which input, which field, which value."""

    exit_code = 2


class Infeasible(PlannerError):
    """No plan in the search space meets the SLOs (or the hardware cannot hold the model)."""

    exit_code = 3


_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxlist, _repr.maxtuple, _repr.maxdict, _repr.maxset = 3, 6, 6, 4, 6
_repr.maxstring, _repr.maxother, _repr.maxlong = MAX_SHOWN, MAX_SHOWN, 40


def shown(value, limit: int = MAX_SHOWN) -> str:
    """repr(value) cut to `limit` characters (with '...' and the full length when cut).

    reprlib bounds the work for nested containers (depth 3, a few items each), so this is cheap
    for any value, however large or self-similar.
    """
    if isinstance(value, str):
        text = repr(value[: limit + 1])
        full = len(value)
    else:
        try:
            text = _repr.repr(value)
        except Exception:  # a hostile __repr__ is not the user's problem to see
            text = f"<{type(value).__name__}>"
        full = None
    if len(text) <= limit and (full is None or full <= limit):
        return text
    more = f" ({full:,} characters)" if full is not None else ""
    return text[: limit - 3] + "..." + more


def one_line(message: str, limit: int = 2000) -> str:
    """A message as one terminal line: newlines folded to ' | ', at most `limit` characters."""
    text = " | ".join(s.strip() for s in str(message).splitlines() if s.strip())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def clip(text, limit: int = MAX_SHOWN) -> str:
    """str(text) unquoted, cut to `limit` characters (for names a message prints bare: keys, columns)."""
    text = str(text)
    return text if len(text) <= limit else f"{text[: limit - 3]}... ({len(text):,} characters)"


@contextmanager
def named(flag: str):
    """Prefix a BadInput raised inside with the flag its input came from ('--catalog: x.yaml: ...'),
    unless the message already starts with it."""
    try:
        yield
    except BadInput as e:
        msg = str(e)
        raise BadInput(msg if msg.startswith(flag) else f"{flag}: {msg}") from None
