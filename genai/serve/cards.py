"""What ``/v1/models`` says of a checkpoint beyond its family fields."""

from __future__ import annotations

from typing import Any

from genai.checkpoint import Meta


def lineage_card(meta: Meta) -> dict[str, Any] | None:
    """The sweep and trial a promoted checkpoint came from (None for a plain training run)."""
    return None if meta.lineage is None else meta.lineage.model_dump(mode="json")
