"""What every spec section shares: strict pydantic models and the one-line error type.

Its own module so that family modules (``genai/families``) can declare their spec
sections without importing ``genai.config``, which assembles the job spec from them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class SpecError(ValueError):
    """A job, serve or sweep spec is invalid; the message is one line naming the key."""


class Section(BaseModel):
    # strict: "5" is not an int; forbid: a typo in a key is an error, not a silent default.
    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True, frozen=True)


def PathField(default: Any, *, description: str, keywords: tuple[str, ...] = ()) -> Any:
    """A field holding a local path (or one of ``keywords``, such as ``stdlib``). The driver
    makes it absolute once, against the directory the command runs in: Ray Tune runs each
    trial in a directory of its own, and workers need not share the driver's."""
    return Field(default, description=description, json_schema_extra={"user_path": list(keywords)})


def relative_paths(spec: BaseModel, prefix: str = "") -> dict[str, str]:
    """``{dotted key: absolute path}`` for every relative path in a :func:`PathField`."""
    found: dict[str, str] = {}
    for name, field in type(spec).model_fields.items():
        value = getattr(spec, name)
        if isinstance(value, BaseModel):
            found |= relative_paths(value, f"{prefix}{name}.")
            continue
        extra = field.json_schema_extra
        if not (isinstance(extra, dict) and "user_path" in extra and isinstance(value, str)):
            continue
        if value and value not in extra["user_path"] and not Path(value).expanduser().is_absolute():
            found[f"{prefix}{name}"] = str(Path(value).expanduser().absolute())
    return found
