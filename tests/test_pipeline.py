"""sdlab.pipeline: the course's parts as a StableDiffusionPipeline that loads where sdlab cannot be imported."""

from __future__ import annotations

import subprocess
import sys

import torch

import sdlab as sd

PROMPT = "a small red cat on the left, blue background"


def test_the_saved_pipeline_runs_with_plain_diffusers_and_matches_the_course_s_loop(tmp_path):
    pipe = sd.pipeline.assemble()
    folder = sd.pipeline.save_pipeline(pipe, tmp_path / "pipeline")
    assert not list(folder.rglob("*.bin")) and list(folder.rglob("*.safetensors"))
    script = f"""
import sys
sys.modules["sdlab"] = None  # any import of sdlab now fails
import torch
from diffusers import StableDiffusionPipeline
pipe = StableDiffusionPipeline.from_pretrained({str(folder)!r}, local_files_only=True)
pipe.set_progress_bar_config(disable=True)
image = pipe({PROMPT!r}, height=64, width=64, num_inference_steps=5, guidance_scale=3.0,
             generator=torch.Generator().manual_seed(7), output_type="pt").images
torch.save(image, {str(tmp_path / "image.pt")!r})
print(pipe.scheduler.config.prediction_type, pipe.scheduler.config.timestep_spacing)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    record = sd.pretrained.load_pretrained("text_unet")[1]
    assert done.stdout.split()[-2:] == [record["prediction_type"], "trailing"]
    theirs = torch.load(tmp_path / "image.pt")
    assert theirs.shape == (1, 3, 64, 64)
    ours = sd.guidance.generate(pipe.unet, pipe.text_encoder, pipe.vae, [PROMPT], guidance_scale=3.0,
                                num_inference_steps=5, generator=torch.Generator().manual_seed(7),
                                sampler=sd.text_unet.latent_sampler(record["schedule"], record["prediction_type"]))
    torch.testing.assert_close(ours / 2 + 0.5, theirs, atol=1e-4, rtol=0)
