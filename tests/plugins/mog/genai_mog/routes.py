"""``POST /v1/mog/samples``, gateway side: counted, timed and logged by genai."""

from __future__ import annotations

from genai.serve.api import GatewayCalls, Route
from genai_mog.schemas import SamplesRequest, SamplesResponse


async def samples(calls: GatewayCalls, route: Route, body: SamplesRequest) -> SamplesResponse:
    async with calls.observe(route.path) as rec:
        rec["params"] = {"n": body.n, "seed": body.seed}
        out = await calls.call(route, body.model_dump(), rec["key"])
        points = out.pop("points")
        rec.update(out, n_points=len(points))
    return SamplesResponse(id=rec["id"], created=int(rec["time"]), model=out["model"], data=points)
