"""What a finished sweep leaves: a table of every trial (CSV + Parquet), a curves PNG,
and the best trial's checkpoint promoted, with its lineage, to ``<sweep>/best``."""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from genai import checkpoint as ckpt
from genai.tune.spec import Sweep

_TRIAL_ID = re.compile(r"([0-9a-f]{5}_\d{5})")


@dataclass
class TrialRow:
    trial_id: str
    config: dict[str, Any]
    status: str  # DONE, STOPPED (early, by the scheduler) or ERROR
    steps: int
    last: float
    best: float
    reason: str = ""
    curve: list[tuple[int, float]] = field(default_factory=list, repr=False)

    def flat(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("config", "curve")}
        out.update({f"config.{k}": v for k, v in self.config.items()})
        return out


def collect(grid, sweep: Sweep) -> list[TrialRow]:
    """One row per trial from Tune's ResultGrid (which also covers trials of an earlier,
    interrupted driver)."""
    metric, better = sweep.metric, (min if sweep.mode == "min" else max)
    max_steps = sweep.base.train.max_steps
    rows = []
    for result in grid:
        df = result.metrics_dataframe
        # from the trial's directory name: after a PBT exploit its metrics may carry the donor's
        m = _TRIAL_ID.search(Path(result.path).name)
        trial_id = (
            m.group(1) if m else (result.metrics or {}).get("trial_id", Path(result.path).name)
        )
        curve: list[tuple[int, float]] = []
        if df is not None and metric in df and "step" in df:
            ok = df[[metric, "step"]].dropna()
            curve = sorted(
                {int(s): float(v) for s, v in zip(ok["step"], ok[metric], strict=True)}.items()
            )
        steps = int(df["step"].max()) if df is not None and "step" in df and len(df) else 0
        values = [v for _, v in curve if math.isfinite(v)]
        if result.error is not None:
            status, reason = "ERROR", failure_reason(result.error)
        else:
            status, reason = ("DONE" if steps >= max_steps else "STOPPED"), ""
        rows.append(
            TrialRow(
                trial_id=trial_id,
                config=dict(result.config or {}),
                status=status,
                steps=steps,
                last=curve[-1][1] if curve else math.nan,
                best=better(values) if values else math.nan,
                reason=reason,
                curve=curve,
            )
        )
    return sorted(rows, key=lambda r: r.trial_id)


def failure_reason(error: BaseException) -> str:
    """The line of a (nested Ray) traceback that says what went wrong."""
    text = str(error)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for marker in ("TrainingDiverged", "SpecError", "Error:"):
        hits = [ln for ln in lines if marker in ln and not ln.startswith(("File ", "Traceback"))]
        if hits:
            return hits[-1][:300]
    return (lines[-1] if lines else type(error).__name__)[:300]


def best_row(rows: list[TrialRow], sweep: Sweep) -> TrialRow | None:
    ok = [r for r in rows if r.status != "ERROR" and math.isfinite(r.last)]
    if not ok:
        return None
    key = (lambda r: r.last) if sweep.mode == "min" else (lambda r: -r.last)
    # the metric at each trial's last evaluation: what its final checkpoint holds
    return min(ok, key=key)


def format_table(rows: list[TrialRow], sweep: Sweep) -> str:
    keys = list(sweep.spec.space)
    head = ["trial", *keys, "status", "steps", f"last {sweep.metric}", "best", "reason"]
    body = [
        [
            r.trial_id,
            *(_fmt(r.config.get(k)) for k in keys),
            r.status,
            str(r.steps),
            _fmt(r.last),
            _fmt(r.best),
            r.reason[:80],
        ]
        for r in rows
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        for line in [head, *body]
    )


def save_tables(rows: list[TrialRow], root: Path) -> tuple[Path, Path]:
    flat = [r.flat() for r in rows]
    columns = sorted({k for row in flat for k in row}, key=_column_order)
    table = pa.table({c: [_cell(row.get(c)) for row in flat] for c in columns})
    csv_path, parquet_path = root / "trials.csv", root / "trials.parquet"
    pacsv.write_csv(table, csv_path)
    pq.write_table(table, parquet_path)
    return csv_path, parquet_path


def plot_curves(rows: list[TrialRow], sweep: Sweep, path: Path) -> Path:
    """Every trial's metric against steps, coloured by (log) learning rate; a cross marks
    a trial the scheduler stopped early, a grey dashed line one that failed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm, Normalize

    color_key = next(
        (k for k in sweep.family.lr_keys if k in sweep.spec.space), next(iter(sweep.spec.space))
    )
    values = [r.config.get(color_key) for r in rows]
    numeric = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    cmap = plt.get_cmap("viridis")
    norm = None
    if numeric:
        lo, hi = min(numeric), max(numeric)
        norm = LogNorm(lo, hi) if lo > 0 and hi > lo else Normalize(lo, hi if hi > lo else lo + 1)
    for r, v in zip(rows, values, strict=True):
        if not r.curve:
            continue
        steps, ys = zip(*r.curve, strict=True)
        if r.status == "ERROR":
            ax.plot(steps, ys, "--", color="0.6", lw=1)
            continue
        color = cmap(norm(v)) if norm is not None and v in numeric else "C0"
        ax.plot(steps, ys, "-", color=color, lw=1.5)
        ax.plot(steps[-1], ys[-1], "x" if r.status == "STOPPED" else "o", color=color, ms=7)
    if norm is not None:
        sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
        fig.colorbar(sm, ax=ax, label=color_key)
    ax.set_xlabel("step")
    ax.set_ylabel(sweep.metric)
    ax.set_title(f"{sweep.name}: {sweep.metric} per trial (x: stopped early, o: ran to the end)")
    finite = [y for r in rows if r.status != "ERROR" for _, y in r.curve if math.isfinite(y)]
    if finite:  # failed trials (a diverging loss) are left out of the scale
        lo, hi = min(finite), max(finite)
        ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.1 * (hi - lo))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def promote(row: TrialRow, sweep: Sweep) -> Path:
    """Copy the best trial's latest checkpoint to ``<sweep>/best`` and record its lineage."""
    source = ckpt.find_latest(sweep.root / "trials" / row.trial_id)
    if source is None:
        raise ckpt.CheckpointError(f"trial {row.trial_id} committed no checkpoint to promote")
    meta = ckpt.read_meta(source)
    at_step = [
        h[sweep.metric] for h in meta.history if h.get("step") == meta.step and sweep.metric in h
    ]
    lineage = ckpt.Lineage(
        sweep=sweep.name,
        trial_id=row.trial_id,
        config=row.config,
        metric=sweep.metric,
        mode=sweep.mode,
        value=at_step[-1] if at_step else row.last,
        base_spec=str(sweep.base_path),
        base_spec_hash=sweep.base_hash(),
        source=str(source),
        promoted=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    return ckpt.copy_checkpoint(source, sweep.root / "best", lineage)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def _cell(v: Any) -> Any:
    return v if v is None or isinstance(v, bool | int | float | str) else str(v)


def _column_order(c: str) -> tuple[int, str]:
    order = ["trial_id", "status", "steps", "last", "best", "reason"]
    return (order.index(c), c) if c in order else (len(order), c)
