"""Sweep specs: every shipped one validates; each kind of mistake is one line naming the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from genai.config import SpecError
from genai.tune.spec import load_sweep, parse_dimension

ROOT = Path(__file__).resolve().parent.parent
SWEEPS = sorted((ROOT / "jobs").glob("tune-*.yaml"))


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_every_sweep_spec_validates(path):
    sweep = load_sweep(path)
    assert sweep.name == path.stem and sweep.spec.space
    assert sweep.family.knows_metric(sweep.metric)
    assert sweep.base.train.max_steps >= sweep.spec.scheduler.grace_period


def test_family_objective_is_the_default_metric(tmp_path):
    (tmp_path / "vae.yaml").write_text((ROOT / "jobs/vae-digits.yaml").read_text())
    path = tmp_path / "s.yaml"
    path.write_text(
        yaml.safe_dump({"base": "vae.yaml", "space": {"train.lr": "uniform(1e-4, 1e-3)"}})
    )
    sweep = load_sweep(path)
    assert (sweep.metric, sweep.mode) == ("val_neg_elbo", "min")


def test_dimensions_parse():
    d = parse_dimension("train.lr", "loguniform(1e-5, 1e-1)")
    assert (d.kind, d.low, d.high) == ("loguniform", 1e-5, 1e-1)
    assert parse_dimension("model.n_layer", "choice([2, 4])").values == [2, 4]
    assert parse_dimension("train.lr", "grid([1e-3, 3e-3])").is_grid


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"space": {"train.lr": "loguniform(1e-2, 1e-4)"}}, "space.train.lr: the lower bound"),
        (
            {"space": {"train.lr": "loguniform(0, 1e-2)"}},
            "space.train.lr: loguniform bounds must be > 0",
        ),
        ({"space": {"train.lr": "logunifrom(1e-4, 1e-2)"}}, "space.train.lr: unknown distribution"),
        ({"space": {"train.lr": "choice([])"}}, "space.train.lr: choice([]) is empty"),
        ({"space": {"train.lr": "uniform(1e-4)"}}, "space.train.lr: uniform takes two numbers"),
        ({"space": {"train.lr": 0.001}}, "space.train.lr must look like"),
        ({"space": {}}, "space must name at least one key"),
        (
            {"space": {"trian.lr": "uniform(1e-4, 1e-3)"}},
            "space.trian.lr = 0.0001: unknown key trian",
        ),
        (
            {"space": {"train.lr": "uniform(1e-4, 2.0)"}},
            "space.train.lr = 2.0: train.lr must be <= 1",
        ),
        ({"space": {"model.n_layer": "uniform(1, 4)"}}, "model.n_layer must be an integer"),
        ({"metric": "val_acc"}, "metric 'val_acc' is not reported by model.family 'lm'"),
        ({"mode": "minimise"}, "mode must be one of"),
        ({"num_samples": 0}, "num_samples must be >= 1"),
        ({"scheduler": {"kind": "hyperband"}}, "scheduler.kind must be one of"),
        ({"scheduler": {"reduction_factor": 1}}, "scheduler.reduction_factor must be > 1"),
        ({"schedular": {"kind": "asha"}}, "unknown key schedular"),
        ({"overrides": {"train.max_step": 5}}, "overrides: unknown key train.max_step"),
        (
            {"space": {"train.lr": "grid([1e-3])"}, "scheduler": {"kind": "pbt"}},
            "cannot mutate grid",
        ),
    ],
)
def test_bad_sweep_specs_are_rejected_naming_the_key(tmp_path, change, message):
    (tmp_path / "lm.yaml").write_text((ROOT / "jobs/lm-tiny.yaml").read_text())
    raw = {"base": "lm.yaml", "space": {"train.lr": "loguniform(1e-4, 1e-2)"}, **change}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError) as info:
        load_sweep(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_cli_rejects_a_bad_sweep_with_one_line_and_exit_2(tmp_path):
    (tmp_path / "lm.yaml").write_text((ROOT / "jobs/lm-tiny.yaml").read_text())
    path = tmp_path / "sweep.yaml"
    path.write_text(
        yaml.safe_dump({"base": "lm.yaml", "space": {"train.lr": "loguniform(1, 0.1)"}})
    )
    r = subprocess.run(
        [sys.executable, "-m", "genai.cli", "tune", str(path)], capture_output=True, text=True
    )
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "genai: error: space.train.lr: the lower bound (1) must be < the upper (0.1)"
    ]


def test_relative_paths_are_resolved_once_in_the_driver(tmp_path, monkeypatch):
    """Ray Tune runs each trial in a directory of its own: the sweep's storage (default
    runs/<name>) and the base job's relative paths must not move with it."""
    import pickle

    project = tmp_path / "project"
    (project / "jobs").mkdir(parents=True)
    base = yaml.safe_load((ROOT / "jobs/lm-tiny.yaml").read_text())
    base["data"] = {**base.get("data", {}), "source": "corpus", "cache_dir": "cache"}
    (project / "jobs" / "lm.yaml").write_text(yaml.safe_dump(base))
    (project / "jobs" / "sweep.yaml").write_text(
        yaml.safe_dump({"base": "lm.yaml", "space": {"train.lr": "grid([1e-3])"}})
    )
    monkeypatch.chdir(project)
    sweep = load_sweep("jobs/sweep.yaml")  # as the README runs it, from the project root
    shipped = pickle.loads(pickle.dumps(sweep))  # what Ray hands the trial function
    monkeypatch.chdir(tmp_path)  # a trial's working directory

    assert shipped.root == project / "runs" / "sweep"
    raw = shipped.trial_raw({"train.lr": 1e-3}, "t1")
    assert raw["checkpoint"]["dir"] == str(project / "runs" / "sweep" / "trials" / "t1")
    assert raw["data"]["source"] == str(project / "corpus")
    assert raw["data"]["cache_dir"] == str(project / "cache")


def test_set_inside_overrides_is_a_dotted_key_as_in_the_file(tmp_path):
    (tmp_path / "lm.yaml").write_text((ROOT / "jobs/lm-tiny.yaml").read_text())
    path = tmp_path / "sweep.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "base": "lm.yaml",
                "overrides": {"train.max_steps": 300},
                "space": {"train.lr": "grid([1e-3])"},
            }
        )
    )
    sweep = load_sweep(path, ["overrides.train.max_steps=60", "space.train.lr=grid([2e-3])"])
    assert sweep.spec.overrides == {"train.max_steps": 60}
    assert sweep.base.train.max_steps == 60
    assert list(sweep.spec.space) == ["train.lr"] and sweep.spec.space["train.lr"].values == [2e-3]


def test_pbt_pauses_at_a_perturbation_point_but_not_at_the_last_step():
    # Stock PBT pauses (and may exploit) a trial whose final report falls on a perturbation
    # point; restarted at max_steps it has nothing to train and its row lost its results.
    from types import SimpleNamespace

    from ray.tune.experiment import Trial
    from ray.tune.schedulers import TrialScheduler

    from genai.tune.schedulers import FinishingPBT

    trial = Trial("run_trial", config={"train.lr": 1e-3}, stub=True)
    controller = SimpleNamespace(
        search_alg=None, get_live_trials=lambda: [trial], get_trials=lambda: [trial]
    )
    pbt = FinishingPBT(
        max_steps=8,
        time_attr="step",
        metric="val_loss",
        mode="min",
        perturbation_interval=4,
        hyperparam_mutations={"train.lr": [1e-3, 1e-4]},
        synch=True,
    )
    pbt.on_trial_add(controller, trial)
    assert pbt.on_trial_result(controller, trial, {"step": 4, "val_loss": 1.0}) == "PAUSE"
    last = pbt.on_trial_result(controller, trial, {"step": 8, "val_loss": 0.9})
    assert last == TrialScheduler.CONTINUE
