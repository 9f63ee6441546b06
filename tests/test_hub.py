"""sdlab.hub's real Stable Diffusion path: offline it fails fast with a message, and the fallback is the course's."""

from __future__ import annotations

import time

import pytest

import sdlab as sd


def test_real_stable_diffusion_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(sd.hub.HubUnavailable, match=r"HF_HUB_OFFLINE is set.*sd.pipeline.load_pipeline"):
        sd.hub.load_real_stable_diffusion()
    assert time.perf_counter() - start < 5


def test_real_stable_diffusion_fails_within_its_timeout_when_the_hub_hangs(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def hangs(*args, timeout=None, **kwargs):  # a network that never answers
        time.sleep(timeout)
        raise TimeoutError("timed out")

    monkeypatch.setattr(sd.hub.socket, "create_connection", hangs)
    start = time.perf_counter()
    with pytest.raises(sd.hub.HubUnavailable, match="did not answer within 3"):
        sd.hub.load_real_stable_diffusion()
    assert time.perf_counter() - start < 5


def test_offline_the_fallback_is_the_course_s_pipeline_and_it_says_so(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    pipe, note = sd.hub.real_or_course_pipeline()
    assert time.perf_counter() - start < 5
    assert type(pipe).__name__ == "StableDiffusionPipeline" and pipe.unet.config.sample_size == 16
    assert "not reachable" in note and "course's own Stable Diffusion" in note
