"""Spec files: YAML in, ``--set`` overrides, and validation errors as one line naming the key.

Unknown keys are errors, numbers are not parsed from strings, and every error message names
the dotted key, the rule and the value: ``train.lr must be > 0, got -1``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from genai.specbase import SpecError


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads ``3e-4`` as a float (YAML 1.1 wants ``3.0e-4``)."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def yaml_value(text: str) -> Any:
    """One YAML value (a ``--set`` value, a sweep dimension's arguments)."""
    return yaml.load(text, Loader=_YamlLoader)


def _format_error(err: dict[str, Any], prefix: str, tags: Mapping[str, Iterable[str]]) -> str:
    # discriminated unions put the tag in the path (model.gan.latent_dim): drop it
    parts = [str(p) for p in err["loc"]]
    if len(parts) >= 2 and parts[1] in tags.get(parts[0], ()):
        del parts[1]
    loc = ".".join(parts)
    key = f"{prefix}{loc}" if loc else prefix.rstrip(".") or "spec"
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    shown = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    rules = {
        "greater_than": lambda: f"must be > {ctx.get('gt')}",
        "greater_than_equal": lambda: f"must be >= {ctx.get('ge')}",
        "less_than": lambda: f"must be < {ctx.get('lt')}",
        "less_than_equal": lambda: f"must be <= {ctx.get('le')}",
        "int_type": lambda: "must be an integer",
        "float_type": lambda: "must be a number",
        "bool_type": lambda: "must be true or false",
        "string_type": lambda: "must be a string",
        "list_type": lambda: "must be a list",
        "model_type": lambda: "must be a mapping",
        "literal_error": lambda: f"must be one of {ctx.get('expected')}",
        "string_pattern_mismatch": lambda: f"must match {ctx.get('pattern')}",
        "missing": lambda: "is required",
    }
    if kind == "union_tag_invalid":
        field = str(ctx.get("discriminator", "")).strip("'")
        return f"{key}.{field} must be one of {ctx.get('expected_tags')}, got {ctx.get('tag')!r}"
    if kind == "extra_forbidden":
        return f"unknown key {key}"
    if kind == "missing":
        return f"{key} is required"
    if kind == "value_error":
        # our own validators: the message starts with the field inside this section
        head = f"{prefix}{loc}." if loc else prefix
        return f"{head}{ctx.get('error', err['msg'])}"
    rule = rules.get(kind, lambda: err["msg"].lower())()
    return f"{key} {rule}, got {shown}"


def validation_message(
    exc: ValidationError, prefix: str = "", tags: Mapping[str, Iterable[str]] | None = None
) -> str:
    """One line for the first error (the others usually follow from it), naming the key.
    ``tags``: the discriminated unions' sections and their tags (``{"model": ["lm", ...]}``),
    dropped from the key as the user never writes them."""
    errors = exc.errors(include_url=False)
    first = _format_error(errors[0], prefix, tags or {})
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return first + more


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides; values are parsed as YAML scalars/lists."""
    for item in overrides:
        if "=" not in item:
            raise SpecError(f"--set {item!r} must look like dotted.key=value")
        dotted, _, text = item.partition("=")
        keys = dotted.strip().split(".")
        if not all(keys):
            raise SpecError(f"--set {item!r} has an empty key")
        try:
            value = yaml_value(text) if text.strip() else ""
        except yaml.YAMLError as exc:
            raise SpecError(f"--set {dotted}: cannot parse value {text!r}: {exc}") from None
        node = raw
        for i, key in enumerate(keys[:-1]):
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise SpecError(f"--set {dotted}: {'.'.join(keys[: i + 1])} is not a mapping")
            node = child
        node[keys[-1]] = value
    return raw


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"spec file not found: {p}")
    try:
        raw = yaml_value(p.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SpecError(f"{p}: invalid YAML{where}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{p}: the top level must be a mapping of sections")
    return raw


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` laid on top, mappings merged key by key (neither is changed)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = (
            deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        )
    return out
