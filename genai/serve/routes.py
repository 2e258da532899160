"""Every registered family's serving surface, gathered: routes by path, the families that
serve each, id prefixes, card fields and generation-log fields."""

from __future__ import annotations

from functools import cache

from pydantic import BaseModel

from genai.families import FAMILIES
from genai.serve.api import Route


@cache
def routes() -> dict[str, Route]:
    found: dict[str, Route] = {}
    for family in FAMILIES.values():
        for route in family.routes:
            if found.get(route.path, route) is not route:
                raise ValueError(
                    f"family {family.name!r} declares {route.path} again; families that "
                    "share a route list the same Route object"
                )
            found[route.path] = route
    return found


def route_at(path: str) -> Route:
    return routes()[path]


@cache
def families_of(path: str) -> tuple[str, ...]:
    """The families whose models answer ``path``."""
    listing = [f.name for f in FAMILIES.values() if any(r.path == path for r in f.routes)]
    return tuple(dict.fromkeys(listing + list(route_at(path).answered_by)))


def id_prefixes() -> dict[str, str]:
    return {path: r.id_prefix for path, r in routes().items()}


def card_fields() -> list[type[BaseModel]]:
    return _unique(f.card_fields for f in FAMILIES.values())


def log_fields() -> list[type[BaseModel]]:
    return _unique(f.log_fields for f in FAMILIES.values())


def _unique(models) -> list[type[BaseModel]]:
    out: list[type[BaseModel]] = []
    for m in models:
        if m is not None and m not in out:
            out.append(m)
    return out
