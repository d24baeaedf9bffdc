"""Parsing YAML and JSON input files with bounded work: the step before any schema is checked.

A few KB of YAML can expand (through aliases) to billions of elements, and a few KB of brackets
nests deeper than Python's recursion limit. Every input file (catalog, workload, config.json,
profile, JSONL trace lines) is parsed here, and refused with one BadInput line naming the file when:

- it nests deeper than MAX_DEPTH (our formats need 4 levels);
- its YAML aliases expand it beyond MAX_NODES nodes (the expanded size is counted on the node
  graph, before anything is built, in time linear in the file);
- it holds a non-finite number (YAML .inf/.nan, JSON NaN/Infinity, or 1e999 which parses as inf):
  no field of ours means infinity.
"""

from __future__ import annotations

import json
import math

from planner.errors import BadInput, clip, shown

MAX_DEPTH = 64
#: Nodes after alias expansion: a 1,000,000-value list of lengths is still allowed.
MAX_NODES = 2_000_000


def _yaml_where(node) -> str:
    m = getattr(node, "start_mark", None)
    return f" (line {m.line + 1}, column {m.column + 1})" if m is not None else ""


def _check_yaml_graph(root, label: str) -> None:
    """Depth, expanded size and non-finite floats of a composed YAML node graph (iterative)."""
    import yaml

    size: dict[int, int] = {}  # id(node) -> expanded node count, memoised: aliases cost nothing to revisit
    stack = [(root, 1, False, "")]
    on_path: set[int] = set()
    while stack:
        node, depth, done, where = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            kids = _children(node)
            size[key] = 1 + sum(size.get(id(k), 1) for k in kids)
            if size[key] > MAX_NODES:
                raise BadInput(f"{label}: YAML expands to more than {MAX_NODES:,} values through its aliases "
                               f"(&anchor / *alias){_yaml_where(node)}: refusing it")
            continue
        if key in size:
            continue
        if key in on_path:  # a recursive alias: CSafeLoader can build self-containing lists
            raise BadInput(f"{label}: YAML alias refers to itself{_yaml_where(node)}")
        if depth > MAX_DEPTH:
            raise BadInput(f"{label}: nested deeper than {MAX_DEPTH} levels{_yaml_where(node)}")
        if isinstance(node, yaml.ScalarNode):
            if node.tag == "tag:yaml.org,2002:float":
                try:
                    bad = not math.isfinite(float(node.value.replace("_", "")))
                except ValueError:
                    bad = True  # .inf / .nan spellings float() does not read
                if bad:
                    field = f" field {clip(where)}:" if where else ""
                    raise BadInput(f"{label}:{field} {shown(node.value)} is not a finite number{_yaml_where(node)}")
            size[key] = 1
            continue
        on_path.add(key)
        stack.append((node, depth, True, where))
        if isinstance(node, yaml.SequenceNode):
            stack.extend((k, depth + 1, False, f"{where}[{i}]") for i, k in enumerate(node.value))
        else:
            for k, v in node.value:
                name = k.value if isinstance(k, yaml.ScalarNode) else "?"
                stack.append((k, depth + 1, False, where))
                stack.append((v, depth + 1, False, f"{where}.{name}" if where else str(name)))


def _children(node) -> list:
    import yaml

    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [x for pair in node.value for x in pair]
    return []


def load_yaml(text: str, label: str):
    """The document in `text` (YAML, safe types only); BadInput naming `label` on any problem."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)  # the C parser: fast, and iterative
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_yaml_graph(node, label)
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise BadInput(f"{label}: not valid YAML{at}: {shown(problem)[1:-1]}") from None
    except RecursionError:
        raise BadInput(f"{label}: nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, OverflowError) as e:  # e.g. an int of 10,000 digits, a bad timestamp
        raise BadInput(f"{label}: cannot read a value: {_why(e)}") from None
    finally:
        loader.dispose()


def _why(e: Exception) -> str:
    if "integer string conversion" in str(e):
        return "an integer with more than 4,300 digits"
    return shown(str(e))[1:-1]


def _finite_float(text: str) -> float:
    x = float(text)
    if not math.isfinite(x):
        raise ValueError(f"number {text[:40]} is out of range")
    return x


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number (JSON has no NaN or Infinity)")


def load_json(text: str, label: str):
    """The value in `text` (JSON, finite numbers only); BadInput naming `label` on any problem."""
    try:
        doc = json.loads(text, parse_float=_finite_float, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise BadInput(f"{label}: not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None
    except RecursionError:
        raise BadInput(f"{label}: nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as e:  # our parse hooks, or an integer of more than 4300 digits
        raise BadInput(f"{label}: {_why(e)}") from None
    _check_json_depth(doc, label)
    return doc


def _check_json_depth(doc, label: str) -> None:
    stack = [(doc, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            if d > MAX_DEPTH:
                raise BadInput(f"{label}: nested deeper than {MAX_DEPTH} levels")
            stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))


def read_text(path, label: str, what: str = "file", max_bytes: int = 1 << 30) -> str:
    """A file's text (UTF-8); BadInput naming `label` when missing, unreadable, binary or too big."""
    from pathlib import Path

    p = Path(path)
    try:
        if p.is_dir():
            raise BadInput(f"{label}: is a directory, not a {what}")
        size = p.stat().st_size
        if size > max_bytes:
            raise BadInput(f"{label}: {size / 1e6:.0f} MB is too big for a {what} (limit {max_bytes / 1e6:.0f} MB)")
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"{label}: {what} not found") from None
    except UnicodeDecodeError:
        raise BadInput(f"{label}: not a text {what} (cannot decode as UTF-8)") from None
    except OSError as e:
        raise BadInput(f"{label}: cannot read {what}: {e.strerror or e}") from None
