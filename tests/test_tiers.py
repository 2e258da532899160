"""The default tier (`make test`, -m "not full") keeps every path once, for real."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# what `make test` must exercise -> the test that does
COVERAGE = {
    "LM training (2 workers, ZeRO-2)": "test_train_e2e.py::test_zero2_two_workers_write_complete_checkpoints",
    "LM ZeRO-3 export": "test_train_e2e.py::test_zero3_checkpoint_loads_in_transformers",
    "GAN training": "test_images_e2e.py::test_gan_checkpoint_holds_both_engines_metrics_and_pictures",
    "VAE training": "test_images_e2e.py::test_vae_zero3_reports_bounds_in_nats",
    "exact resume": "test_train_e2e.py::test_resume_reproduces_the_uninterrupted_run",
    "ASHA sweep": "test_tune_e2e.py::test_asha_sweep_stops_weak_trials_early_and_promotes_the_best",
    "promotion": "test_tune_e2e.py::test_promoted_checkpoint_is_a_self_contained_copy_with_lineage",
    "completions": "test_serve_e2e.py::test_completion_round_trip",
    "stream and chat": "test_stream_e2e.py::test_openai_client_streams_completions_and_chat",
    "images and VAE routes": "test_images_e2e.py::test_every_route_over_http",
    "401": "test_serve_e2e.py::test_api_keys_are_enforced",
    "429": "test_serve_e2e.py::test_a_keys_rate_limit_answers_429_with_retry_after",
    "generation log": "test_serve_e2e.py::test_generation_log_with_feedback_and_a_torn_file",
    "hot swap": "test_hotswap_e2e.py::test_hot_swap_under_load_loses_nothing_and_refuses_bad_checkpoints",
    "CLI train": "test_train_e2e.py::test_cli_train_joins_a_running_ray",
    "CLI serve and query": "test_serve_e2e.py::test_genai_serve_cli_query_and_sigterm",
    "a family from a plugin package": "test_plugin_e2e.py::test_served_on_its_own_route_with_a_card_a_metric_and_a_log_record",
    "403 per key scope": "test_serve_e2e.py::test_key_scopes_answer_403_naming_what_is_missing",
    "playground in a browser": "test_serve_e2e.py::test_playground_in_a_real_browser",
    "dedup on Ray Data": "test_dedup.py::test_genai_data_dedup_runs_the_stages_on_ray_data",
    "audio GAN training": "test_audio_e2e.py::test_audio_checkpoint_holds_both_engines_quality_spectrograms_and_wavs",
    "audio GAN exact resume": "test_audio_e2e.py::test_audio_resume_reproduces_the_uninterrupted_run",
    "speech route (WAV)": "test_audio_e2e.py::test_the_official_client_gets_wavs_of_the_digits_asked_for",
    "speech route (MIDI from a music LM)": "test_audio_e2e.py::test_a_music_model_answers_midi_and_wav",
}


def test_the_default_tier_covers_every_path():
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "not full", "tests"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        # a session of its own: its end-of-session check for Ray processes would otherwise
        # count this suite's Ray, which runs in the same session
        start_new_session=True,
    )
    assert r.returncode == 0, r.stdout[-2000:]
    collected = {line.split("[")[0] for line in r.stdout.splitlines() if "::" in line}
    missing = {what: t for what, t in COVERAGE.items() if f"tests/{t}" not in collected}
    assert not missing, f"not in make test's tier: {missing}"
