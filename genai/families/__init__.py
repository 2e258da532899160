"""The registry of model families: the built-in ones, and any that installed packages
register under the ``genai.families`` entry-point group::

    # the plugin's pyproject.toml
    [project.entry-points."genai.families"]
    mog = "genai_mog:FAMILY"

A family is a :class:`~genai.families.base.Family`; the README's "Adding a family" lists
what one writes. Entry points are read when this module is first imported, in every
process (driver, Train workers, Serve replicas alike), so a family installed in the
environment is known everywhere without further registration.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from genai.families import gan, lm, vae
from genai.families.base import Family

GROUP = "genai.families"


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


FAMILIES: dict[str, Family] = _discover()


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; known: {sorted(FAMILIES)}") from None
