"""mini-CLIP: a genuine CLIPTextModel text tower, a small image tower, CLIP's loss, and the measurements."""

import time

import pytest
import torch
from transformers import CLIPTextModel
from transformers.models.clip.modeling_clip import image_text_contrastive_loss as transformers_clip_loss

import sdlab as sd
from sdlab.clip import MiniCLIP, MiniCLIPConfig, contrastive_loss, similarity_matrix

TINY = MiniCLIPConfig(embed_dim=16, text_width=32, text_layers=1, text_heads=2, image_channels=8, image_size=64)


def tiny_clip(seed=0):
    with sd.random.seeded_global_rng(seed):
        return MiniCLIP(TINY).eval()


def batch(n=6, seed=0):
    return sd.clip.clip_batch(n, torch.Generator().manual_seed(seed))


def test_the_text_tower_is_a_real_clip_text_model_with_the_real_vocabulary():
    model = tiny_clip()
    assert isinstance(model.text_model, CLIPTextModel)
    config = model.text_model.config
    assert (config.vocab_size, config.bos_token_id, config.eos_token_id, config.max_position_embeddings) == \
        (49408, 49406, 49407, 77)


def test_shapes_of_everything():
    model = tiny_clip()
    images, ids, mask = batch()
    assert images.shape == (6, 3, 64, 64) and ids.shape == mask.shape and ids[:, 0].eq(49406).all()
    assert model.encode_image(images).shape == (6, 16) and model.encode_text(ids, mask).shape == (6, 16)
    assert model.token_states(ids, mask).shape == (*ids.shape, 32)
    assert torch.allclose(model.encode_text(ids, mask).norm(dim=-1), torch.ones(6))
    assert model(images, ids, mask).shape == (6, 6)


def test_contrastive_loss_is_clips_symmetric_cross_entropy():
    logits = torch.randn(5, 5, generator=torch.Generator().manual_seed(0))
    ours = contrastive_loss(logits)
    rows = torch.nn.functional.cross_entropy(logits, torch.arange(5))
    cols = torch.nn.functional.cross_entropy(logits.T, torch.arange(5))
    torch.testing.assert_close(ours, (rows + cols) / 2)
    torch.testing.assert_close(ours, transformers_clip_loss(logits.T))  # transformers takes logits_per_text
    assert contrastive_loss(100 * torch.eye(4)).item() < 1e-6  # each picks its own: no loss
    with pytest.raises(ValueError, match=r"square \(B, B\) tensor; got \(2, 3\)"):
        contrastive_loss(torch.zeros(2, 3))


def test_similarity_matrix_is_cosine_times_the_temperature():
    a, b = torch.randn(3, 4), torch.randn(5, 4)
    sims = similarity_matrix(a, b)
    torch.testing.assert_close(sims[1, 2], torch.nn.functional.cosine_similarity(a[1], b[2], dim=0))
    torch.testing.assert_close(similarity_matrix(a, b, logit_scale=torch.tensor(2.0)), sims * torch.e**2)
    torch.testing.assert_close(similarity_matrix(a, b, logit_scale=10.0), sims * 100)  # CLIP caps it at 100
    with pytest.raises(ValueError, match="embedding sizes differ: images 4, texts 3"):
        similarity_matrix(a, torch.randn(2, 3))


def test_training_through_fit_lowers_the_loss():
    model = tiny_clip().train()
    config = sd.train.TrainConfig(steps=30, batch_size=16, lr=3e-3, warmup_steps=3, ema_decay=0.0)
    result = sd.train.fit(model, sd.clip.clip_loss, sd.clip.clip_batch, config=config, progress=False)
    assert sum(result.losses[-5:]) / 5 < sum(result.losses[:3]) / 3 - 0.1


def test_a_frozen_text_tower_keeps_its_fingerprint_while_the_image_tower_trains():
    model = tiny_clip().train()
    before = sd.clip.fingerprint(model.text_model)
    assert before == sd.clip.fingerprint(tiny_clip().text_model) and len(before) == 64
    image = sd.clip.fingerprint(model.image_model)
    model.text_model.requires_grad_(False)
    model.text_projection.requires_grad_(False)
    config = sd.train.TrainConfig(steps=3, batch_size=8, lr=1e-2, warmup_steps=1, ema_decay=0.0)
    trained = sd.train.fit(model, sd.clip.clip_loss, sd.clip.clip_batch, config=config, progress=False).model
    assert sd.clip.fingerprint(trained.text_model) == before
    assert sd.clip.fingerprint(trained.image_model) != image
    with torch.no_grad():
        next(trained.text_model.parameters()).view(-1)[0] += 1e-3  # one number moved: another fingerprint
    assert sd.clip.fingerprint(trained.text_model) != before


def test_save_and_load_round_trip_and_the_text_encoder_loads_without_sdlab(tmp_path):
    model = tiny_clip()
    model.save_pretrained(tmp_path / "clip", info={"steps": 3})
    again = MiniCLIP.from_pretrained(tmp_path / "clip")
    images, ids, mask = batch()
    assert next(again.parameters()).dtype == torch.float32  # stored in float16, used in float32
    torch.testing.assert_close(again(images, ids, mask), model(images, ids, mask), atol=0.05, rtol=0.01)
    plain = CLIPTextModel.from_pretrained(tmp_path / "clip" / "text_encoder", local_files_only=True,
                                          dtype=torch.float32)
    torch.testing.assert_close(plain(input_ids=ids).last_hidden_state, model.token_states(ids), atol=0.01,
                               rtol=0.01)
    with pytest.raises(sd.checkpoints.CheckpointError, match="holds no mini-CLIP"):
        MiniCLIP.from_pretrained(tmp_path)


def test_zero_shot_and_probe_give_fractions():
    model = tiny_clip()
    test = sd.data.make_scenes(20, resolution=64, generator=torch.Generator().manual_seed(1))
    accuracy = sd.clip.zero_shot_accuracy(model, test, ("animal", "size"))
    assert set(accuracy) == {"animal", "size"} and all(0 <= v <= 1 for v in accuracy.values())
    train = sd.data.make_scenes(60, resolution=64, generator=torch.Generator().manual_seed(2))
    probe = sd.clip.probe_accuracy(model, train, test, steps=20)
    assert set(probe) == set(sd.clip.ATTRIBUTES) and all(0 <= v <= 1 for v in probe.values())


def test_bad_images_and_configs_are_refused():
    with pytest.raises(ValueError, match=r"images must be a \(B, 3, 64, 64\) tensor in \[-1, 1\]; got \(2, 3, 32, 32\)"):
        tiny_clip().encode_image(torch.zeros(2, 3, 32, 32))
    with pytest.raises(ValueError, match="text_width=30 must be divisible by text_heads=4"):
        MiniCLIPConfig(text_width=30)


def test_real_clip_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(sd.hub.HubUnavailable, match=r"HF_HUB_OFFLINE is set.*sd.clip.MiniCLIP"):
        sd.hub.load_real_clip()
    assert time.perf_counter() - start < 5


def test_real_clip_fails_fast_when_the_hub_does_not_answer(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port on this machine: refused at once
    start = time.perf_counter()
    with pytest.raises(sd.hub.HubUnavailable, match="did not answer within"):
        sd.hub.load_real_clip(timeout=2.0)
    assert time.perf_counter() - start < 5

    def hangs(*args, timeout=None, **kwargs):  # a hub that never answers: the timeout ends the wait
        time.sleep(timeout)
        raise TimeoutError("timed out")

    monkeypatch.setattr(sd.hub.socket, "create_connection", hangs)
    start = time.perf_counter()
    with pytest.raises(sd.hub.HubUnavailable):
        sd.hub.load_real_clip(timeout=1.0)
    assert 0.9 < time.perf_counter() - start < 5


def test_the_embedding_table_and_the_token_vectors():
    model = tiny_clip()
    _, ids, _ = batch()
    assert model.embedding_table.shape == (49408, 32)
    vectors = model.token_vectors(ids)
    assert vectors.shape == (*ids.shape, 32)
    torch.testing.assert_close(vectors[:, 0] - vectors[0, 0], torch.zeros_like(vectors[:, 0]))  # BOS at position 0


def test_the_eos_probe_reads_the_state_at_the_end_of_each_caption():
    from sdlab.clip import _pooled_token_state

    model = tiny_clip()
    captions = ["a cat", "a small red cat on the left, blue background"]
    tokens = sd.tokenizer.tokenize(captions)
    ids, mask = tokens["input_ids"], tokens["attention_mask"]
    with torch.no_grad():
        states = model.token_states(ids, mask)
    eos = _pooled_token_state(model, captions, "eos")
    for i, n in enumerate(mask.sum(1).tolist()):
        assert ids[i, n - 1] == sd.clip.EOS
        assert torch.allclose(eos[i], states[i, n - 1], atol=1e-5)
    n = int(mask[0].sum())
    assert torch.allclose(_pooled_token_state(model, captions, "mean")[0], states[0, :n].mean(0), atol=1e-5)
    test = sd.data.make_scenes(10, resolution=64, generator=torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="pooling"):
        sd.clip.probe_accuracy(model, test, test, pooling="max")
