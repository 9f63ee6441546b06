"""scripts/reproduce.py: one command retrains every shipped model, in order, into its own folder, never the package's."""

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import sdlab as sd
from sdlab.pretrained import REGISTRY, Shipped, load_pretrained, weights_dir

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "reproduce.py"
spec = importlib.util.spec_from_file_location("reproduce", SCRIPT)
reproduce = importlib.util.module_from_spec(spec)
sys.modules["reproduce"] = reproduce  # dataclasses look their module up there
spec.loader.exec_module(reproduce)


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def stamps(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for pattern in ("*-run.safetensors", "latent-scenes-*.pt")
            for p in folder.glob(pattern)}


def test_the_stage_list_holds_every_registry_entry_after_what_it_needs(monkeypatch):
    reproduce.check_stages()
    assert sorted(reproduce.STAGES) == sorted(REGISTRY)
    assert set(reproduce.NEEDS["mini_sd"]) >= set(REGISTRY["mini_sd"].recipe.parts)
    monkeypatch.setitem(REGISTRY, "scenes64", Shipped("scenes64", 2, "a new model", "sdlab.unet.UNet", None))
    with pytest.raises(ValueError, match=r"\['scenes64'\] missing"):
        reproduce.check_stages()
    monkeypatch.delitem(REGISTRY, "scenes64")
    with pytest.raises(ValueError, match="out of order: vae_f4 before judge"):
        reproduce.check_stages(tuple(reversed(reproduce.STAGES)))


def test_a_subset_runs_in_order_and_says_which_stages_to_run_first(tmp_path):
    assert reproduce.selected("vae_f4, judge") == ("judge", "vae_f4")
    assert reproduce.selected(None) == reproduce.STAGES
    with pytest.raises(SystemExit, match="--stages takes names from catdog_classifier"):
        reproduce.selected("judge,vae_f16")
    with weights_dir(tmp_path):
        reproduce.check_needs(("judge", "vae_f4", "vae_f8"))  # the judge runs first
        with pytest.raises(SystemExit, match="text_unet needs judge, miniclip, vae_f4, which .* does not hold: "
                                             "run --stages judge,miniclip,vae_f4 first"):
            reproduce.check_needs(("text_unet",))
    reproduce.check_needs(("text_unet",))  # in sdlab/weights every part is there


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """`scripts/reproduce.py --quick` into a fresh folder, on one CPU thread, timed."""
    out = tmp_path_factory.mktemp("reproduced")
    shipped, builds = digests(sd.checkpoints.WEIGHTS_DIR), stamps(ROOT / "build")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out), "--threads", "1"],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-3000:]
    return {"out": out, "stdout": done.stdout, "seconds": seconds, "shipped": shipped, "builds": builds}


def test_the_quick_run_takes_under_a_minute(quick_run):
    assert quick_run["seconds"] < 60, quick_run["seconds"]


def test_the_quick_run_writes_every_registry_entry_into_its_folder_and_each_loads(quick_run):
    from diffusers import StableDiffusionPipeline

    out = quick_run["out"]
    assert {p.name for p in out.iterdir()} == {entry.path.name for entry in REGISTRY.values()} | {
        "build", "reproduce.json"}
    assert {"text_unet-run.safetensors", "vae_f4-run.safetensors"} <= {p.name for p in (out / "build").iterdir()}
    assert any((out / "build").glob("latent-scenes-64-*.pt"))  # text_unet's encoded scenes: 64 in quick mode
    with weights_dir(out):
        for name in REGISTRY:
            model, info = load_pretrained(name)
            assert info and model is not None, name
            if "steps" in info:  # trained here, in quick mode (mini_sd records its parts)
                assert info["steps"] == reproduce.QUICK_RUN["steps"], (name, info["steps"])
    pipe = StableDiffusionPipeline.from_pretrained(out / "mini_sd", local_files_only=True, low_cpu_mem_usage=False)
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size
    # mini-CLIP's three phases: each its own checkpoint and folder; the last moved only the image tower
    assert {f"miniclip{k}-run.safetensors" for k in ("-phase1", "-phase2", "")} <= {p.name for p in (out / "build").iterdir()}
    with weights_dir(out):
        clip, record = load_pretrained("miniclip")
        text_unet = load_pretrained("text_unet")[1]
    assert len(sd.pretrained.phases(record)) == 3 == 1 + len(sd.pretrained.phases(record["start"]))
    second = sd.clip.MiniCLIP.from_pretrained(out / "build" / "miniclip-phase2")
    assert sd.clip.fingerprint(second.text_model) == sd.clip.fingerprint(clip.text_model)
    assert sd.clip.fingerprint(second.image_model) != sd.clip.fingerprint(clip.image_model)
    assert text_unet["text_encoder_sha256"] == sd.clip.fingerprint(pipe.text_encoder) == sd.clip.fingerprint(clip.text_model)


def test_the_quick_run_prints_and_stores_each_stage_s_seconds_and_figures(quick_run):
    summary = json.loads((quick_run["out"] / "reproduce.json").read_text())
    assert summary["mode"] == "quick" and [row["stage"] for row in summary["stages"]] == list(reproduce.STAGES)
    lines = quick_run["stdout"].splitlines()
    for row in summary["stages"]:
        assert row["seconds"] > 0 and row["figures"], row
        printed = [line for line in lines if line.split()[:2] == [row["stage"], f"{row['seconds']:.1f}"]]
        assert len(printed) == 1 and printed[0].endswith(reproduce.describe(row["figures"])), (row, printed)
    figures = {row["stage"]: row["figures"] for row in summary["stages"]}
    assert set(figures["miniclip"]["zero_shot"]) == set(sd.judge.ATTRIBUTES)
    assert set(figures["text_unet"]["adherence"]) == set(figures["mini_sd"]["adherence"]) == {
        *sd.judge.ATTRIBUTES, "all"}
    assert any(line.startswith("total") for line in lines)


def test_the_quick_run_leaves_the_package_s_weights_and_the_real_checkpoints_alone(quick_run):
    assert digests(sd.checkpoints.WEIGHTS_DIR) == quick_run["shipped"]
    assert stamps(ROOT / "build") == quick_run["builds"]
