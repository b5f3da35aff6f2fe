"""Load YAML configs into their pydantic models, reporting every problem at once.

    cfg = load_config("examples/arithmetic.yaml", GenerationConfig)

A config with three mistakes gets one `ConfigError` listing all three, each
with its key path and a hint, e.g.
`sampling.temperture: unknown key; did you mean 'temperature'?`. A file that
is not UTF-8, not YAML, not a mapping at the top, or that repeats a key
(YAML would silently keep the last one) is refused the same way, naming the
line.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A config file that does not validate; `problems` holds one line per mistake."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        listing = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s) in the config:\n{listing}")


def _model_at(model: type[BaseModel], path: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that owns the key at `path` (None if not a model)."""
    current: Any = model
    for part in path:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            continue
        field = current.model_fields.get(part)
        if field is None:
            return None
        current = _unwrap_model(field.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap_model(annotation: Any) -> Any:
    """The BaseModel inside `X | None` / `list[X]` annotations, else the annotation."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _unwrap_model(arg)
        if isinstance(found, type) and issubclass(found, BaseModel):
            return found
    return annotation


def _describe(model: type[BaseModel], error: dict[str, Any]) -> str:
    loc = tuple(error["loc"])
    # pydantic appends the union member / validator name to some locations.
    path = ".".join(str(p) for p in loc if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
    kind = error["type"]
    if kind == "extra_forbidden":
        owner = _model_at(model, loc[:-1])
        known = list(owner.model_fields) if owner else []
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else f"allowed keys: {', '.join(known)}"
        return f"{path}: unknown key; {hint}"
    if kind == "missing":
        owner = _model_at(model, loc[:-1])
        field = owner.model_fields.get(str(loc[-1])) if owner else None
        what = f" ({field.description})" if field and field.description else ""
        return f"{path}: required key is missing; add it{what}"
    message = error["msg"].removeprefix("Value error, ")
    got = error.get("input")
    shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
    return f"{path or '<top level>'}: {message}{shown}"


def validate_config(data: Any, model: type[M], source: str = "<config>") -> M:
    """Validate plain data into `model`, raising `ConfigError` with every problem."""
    if not isinstance(data, dict):
        raise ConfigError(source, [f"<top level>: expected a mapping of keys, got {type(data).__name__}"])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, [_describe(model, e) for e in exc.errors()]) from None


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, first: Any, again: Any):
        super().__init__(f"key {key!r} appears twice (line {first.line + 1} and line {again.line + 1})")
        self.key, self.problem_mark = key, again


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping with a repeated key instead of keeping the last value."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise _DuplicateKey(key, seen[key], key_node.start_mark)
            if isinstance(key, (str, int, float, bool)):
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def _kind(value: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number", bool: "true/false"}.get(
        type(value), type(value).__name__)


def _read_yaml(path: Path) -> Any:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(str(path), [f"line {line}: not UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start}); save "
                                      "the file as UTF-8"]) from None
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except _DuplicateKey as exc:
        raise ConfigError(str(path), [f"{exc}; YAML would keep only the last value, silently: keep one"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(str(path), [f"{where}not valid YAML ({getattr(exc, 'problem', exc)}); fix the syntax"]) from None


def _apply_overrides(data: dict[str, Any], overrides: dict[str, Any], source: str) -> None:
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for depth, key in enumerate(parents):
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                where = ".".join(parents[: depth + 1])
                raise ConfigError(source, [f"{where}: expected a mapping of keys, got {_kind(node)}; cannot set "
                                           f"{dotted} inside it"])
        node[leaf] = value


def load_config(path: str | Path, model: type[M], overrides: dict[str, Any] | None = None) -> M:
    """Read a YAML file into `model`; `overrides` are dotted keys (`output.uri`) applied first."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), [f"file not found; check the path (cwd: {Path.cwd()})"])
    data = _read_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), [f"<top level>: expected a mapping of keys (e.g. `prompts: ...`), got "
                                      f"{_kind(data)}; a config file holds one mapping of sections"])
    _apply_overrides(data, overrides or {}, str(path))
    return validate_config(data, model, str(path))
