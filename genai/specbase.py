"""What every spec section shares: strict pydantic models and the one-line error type.

Its own module so that family modules (``genai/families``) can declare their spec
sections without importing ``genai.config``, which assembles the job spec from them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class SpecError(ValueError):
    """A job, serve or sweep spec is invalid; the message is one line naming the key."""


class Section(BaseModel):
    # strict: "5" is not an int; forbid: a typo in a key is an error, not a silent default.
    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True, frozen=True)
