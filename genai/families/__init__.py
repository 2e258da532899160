"""The registry of model families. A new family is a package here plus its model file.

    genai/families/<name>/__init__.py   spec sections, objective, FAMILY = Family(...)
    genai/families/<name>/data.py       driver-side data preparation
    genai/families/<name>/task.py       the training task (steps, evaluation, export)
    genai/families/<name>/serving.py    checkpoint loader and the server the gateway holds
    genai/models/<name>.py              the torch model

and one line in ``FAMILIES`` below.
"""

from __future__ import annotations

from genai.families import gan, lm, vae
from genai.families.base import Family

FAMILIES: dict[str, Family] = {f.name: f for f in (lm.FAMILY, gan.FAMILY, vae.FAMILY)}


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; known: {sorted(FAMILIES)}") from None
