"""The registry of model families: the built-in ones, and any that installed packages
register under the ``genai.families`` entry-point group::

    # the plugin's pyproject.toml
    [project.entry-points."genai.families"]
    audio = "genai_audio:FAMILY"

A family is a :class:`~genai.families.base.Family`; the README's "Adding a family" lists
what one writes. Entry points are read the first time the registry is used (``FAMILIES``
or :func:`get_family`), in every process (driver, Train workers, Serve replicas alike),
so a family installed in the environment is known everywhere without further
registration. Not at import: a plugin imports ``genai.families.base``, and a plugin
imported first must not find itself half-initialised through its own entry point.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from genai.families import gan, lm, vae
from genai.families.base import Family

GROUP = "genai.families"
DEFAULT_FAMILY = "lm"  # a job spec without model.family


@cache
def _discover() -> dict[str, Family]:
    found = {f.name: f for f in (lm.FAMILY, gan.FAMILY, vae.FAMILY)}
    for ep in entry_points(group=GROUP):
        family = ep.load()
        if not isinstance(family, Family):
            raise TypeError(
                f"entry point {ep.name!r} ({ep.value}) in group {GROUP!r} is a "
                f"{type(family).__name__}, not a genai Family"
            )
        if family.name in found:
            raise ValueError(
                f"entry point {ep.name!r} ({ep.value}) registers family {family.name!r}, "
                "which is already registered"
            )
        found[family.name] = family
    return found


if TYPE_CHECKING:
    FAMILIES: dict[str, Family]


def __getattr__(name: str) -> Any:
    if name == "FAMILIES":  # ``FAMILIES: dict[str, Family]``, every registered family by name
        return _discover()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_family(name: str) -> Family:
    try:
        return _discover()[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; known: {sorted(_discover())}") from None
