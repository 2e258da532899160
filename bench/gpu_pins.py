"""The extra ``NAME==VERSION`` pins an offline GPU host needs for genai, to hand to a
wheel builder (its arguments): genai's runtime dependencies (with their own, from this
environment's installed metadata), less what such a host is known to have (torch,
transformers, pyarrow, prometheus-client, numpy, pytest, and theirs) and what the builder
pins already (Ray, DeepSpeed, pydantic, jsonschema).

    python WHEEL_BUILDER $(python bench/gpu_pins.py)

That list is an upper bound (70 distributions here, some large: scipy, matplotlib, pandas,
grpcio), as what a host has beyond that list is not known from here, and .whl/ must stay
small to travel. ``--missing``, run on the host itself (a second's work, no genai import),
names genai's direct requirements (pyproject.toml) that are not installed there; what those
need in turn shows as the first ImportError:

    python bench/gpu_pins.py --missing          # on the GPU host: NAME==VERSION per line
"""

from __future__ import annotations

import sys
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ON_HOST = ["torch", "transformers", "pyarrow", "prometheus-client", "numpy", "pytest"]
PINNED = ["ray", "deepspeed", "hjson", "pydantic", "pydantic-core", "annotated-types"]
PINNED += ["typing-inspection", "jsonschema", "jsonschema-specifications", "referencing"]
PINNED += ["rpds-py", "colorful"]
# Ray's extras genai uses (pyproject: ray[train,serve,tune])
RAY_EXTRAS = {"train", "serve", "tune"}


def closure(roots: list[str], extras: dict[str, set[str]] | None = None) -> set[str]:
    """Installed distributions reachable from ``roots`` through their requirements."""
    extras = extras or {}
    seen: set[str] = set()
    todo = [canonicalize_name(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional dependency not installed here
        seen.add(name)
        for line in dist.requires or []:
            req = Requirement(line)
            envs = [{"extra": e} for e in extras.get(name, set())] or [{"extra": ""}]
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                todo.append(canonicalize_name(req.name))
                if req.extras:
                    extras.setdefault(canonicalize_name(req.name), set()).update(req.extras)
    return seen


def missing() -> list[str]:
    """genai's direct requirements (pyproject.toml) that are not installed here."""
    from pathlib import Path

    import tomllib  # novermin: run with the GPU host's own Python 3.11+

    project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    out = []
    for line in project["project"]["dependencies"]:
        req = Requirement(line)
        try:
            metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            out.append(line)
    return out


def main() -> int:
    if sys.argv[1:] == ["--missing"]:
        for line in missing():
            print(line)
        return 0
    need = closure(["genai"], {"genai": set(), "ray": set(RAY_EXTRAS)})
    have = closure(ON_HOST) | {canonicalize_name(p) for p in PINNED}
    for name in sorted(need - have - {"genai"}):
        print(f"{name}=={metadata.version(name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
