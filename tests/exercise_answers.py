"""For every graded exercise: the reference answer, other right answers, and answers that fool a weak check.

The chapter test files (test_checks*.py) name each formula slip (a missing square root, a swapped
coefficient). This table holds what those do not: answers that are right for the inputs the
notebook shows and wrong in general. They read the notebook's global ``schedule`` instead of
their argument, hard-code a stride, a scale or a size, return values copied from the page, work
only in float64 or only for one picture, or change their input in place. Every one of them must
lose its points; the words say what its feedback must contain. ``tests/test_exercises.py`` adds
three cheats built from each reference answer (replayed values, in place, float64 only).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

import sdlab as sd


@dataclass(frozen=True)
class Answers:
    """One exercise's reference answer, other right answers, and fragile wrong ones: (fn, feedback words)."""

    reference: Callable
    also_right: list[Callable] = field(default_factory=list)
    fragile: list[tuple[Callable, str]] = field(default_factory=list)
    tensor_inputs: bool = True  # False: a multiple-choice answer, which takes no inputs


linear = sd.NoiseSchedule("linear")  # the globals a student's notebook holds (chapter 1, chapters 2 and 3)
cosine = sd.NoiseSchedule("cosine")
DTYPE = "keep the inputs' dtype"
IN_PLACE = "in place"
SCHEDULE = "notebook's `schedule`"


def _unit(x):
    return x / x.norm(dim=-1, keepdim=True)


# --- chapter 1 ---------------------------------------------------------------------------------------

def alphas_cumprod(betas):
    return torch.cumprod(1 - betas, dim=0)


def alphas_cumprod_float64_one(betas):
    return torch.cumprod(torch.ones(len(betas), dtype=torch.float64) - betas, 0)


def alphas_cumprod_in_place(betas):
    return betas.neg_().add_(1).cumprod(0)


def add_noise(x0, noise, t, alphas_cumprod):
    a = alphas_cumprod[t]
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def add_noise_in_place(x0, noise, t, ab):
    return x0.mul_(ab[t].sqrt()).add_((1 - ab[t]).sqrt() * noise)


def add_noise_first_image(x0, noise, t, ab):
    return add_noise(x0[0], noise[0], t, ab)[None]


def add_noise_own_noise(x0, noise, t, ab):
    return add_noise(x0, torch.randn_like(x0), t, ab)


# --- chapter 2 ---------------------------------------------------------------------------------------

def diffusion_loss(model, x0, noise, t, alphas_cumprod):
    a = alphas_cumprod[t].reshape(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    return F.mse_loss(model(x_t, t), noise)


def _loss_with(ab_of, noise_of=lambda noise: noise):
    def loss(model, x0, noise, t, ab):
        a = ab_of(ab, t)
        eps = noise_of(noise)
        return F.mse_loss(model(a.sqrt() * x0 + (1 - a).sqrt() * eps, t), eps)
    return loss


def loss_in_place(model, x0, noise, t, ab):
    a = ab[t].reshape(-1, 1, 1, 1)
    x_t = x0.mul_(a.sqrt()).add_((1 - a).sqrt() * noise)
    return F.mse_loss(model(x_t, t), noise)


def loss_as_number(model, x0, noise, t, ab):
    return diffusion_loss(model, x0, noise, t, ab).item()


def loss_weight(alpha_bar):
    return alpha_bar / (1 - alpha_bar)


VISIBLE_WEIGHTS = loss_weight(sd.NoiseSchedule("cosine").alphas_cumprod.double()[[10, 100, 400, 700, 950]])


# --- chapter 3 ---------------------------------------------------------------------------------------

def pred_original_sample(x_t, eps, alpha_prod_t):
    return (x_t - (1 - alpha_prod_t).sqrt() * eps) / alpha_prod_t.sqrt()


def x0_in_place(x_t, eps, a):
    return x_t.sub_((1 - a).sqrt() * eps).div_(a.sqrt())


def ddim_step(eps, t, x_t, prev_t, alphas_cumprod):
    a_t = alphas_cumprod[t]
    a_prev = alphas_cumprod[prev_t] if prev_t >= 0 else torch.ones((), dtype=a_t.dtype)
    x0 = (x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    return a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps


def ddim_stride_20(eps, t, x_t, prev_t, ab):
    return ddim_step(eps, t, x_t, t - 20, ab)


def ddim_last_step_float(eps, t, x_t, prev_t, ab):
    a_prev = ab[prev_t] if prev_t >= 0 else 1.0  # right until the last step, where 1.0 has no .sqrt()
    x0 = (x_t - (1 - ab[t]).sqrt() * eps) / ab[t].sqrt()
    return a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps


def ddim_in_place(eps, t, x_t, prev_t, ab):
    a_prev = ab[prev_t] if prev_t >= 0 else torch.ones((), dtype=ab.dtype)
    x0 = x_t.sub_((1 - ab[t]).sqrt() * eps).div_(ab[t].sqrt())
    return a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps


# --- chapter 4 ---------------------------------------------------------------------------------------

def similarity_matrix(image_embeds, text_embeds, logit_scale):
    return logit_scale.exp() * _unit(image_embeds) @ _unit(text_embeds).T


def similarity_in_place(image_embeds, text_embeds, logit_scale):
    image_embeds /= image_embeds.norm(dim=-1, keepdim=True)
    text_embeds /= text_embeds.norm(dim=-1, keepdim=True)
    return logit_scale.exp() * image_embeds @ text_embeds.T


def contrastive_loss(logits_per_image):
    targets = torch.arange(len(logits_per_image))
    return (F.cross_entropy(logits_per_image, targets) + F.cross_entropy(logits_per_image.T, targets)) / 2


def contrastive_in_place(logits):
    logits -= logits.max()  # "for stability": harmless for the loss, but the caller's logits change
    return contrastive_loss(logits)


# --- chapter 5 ---------------------------------------------------------------------------------------

def reparameterise(mean, logvar, noise):
    return mean + torch.exp(0.5 * logvar) * noise


def kl_divergence(mean, logvar):
    return 0.5 * (mean**2 + logvar.exp() - 1 - logvar).flatten(1).sum(1)


# --- chapter 6 ---------------------------------------------------------------------------------------

def classifier_free_guidance(noise_uncond, noise_cond, scale):
    return noise_uncond + scale * (noise_cond - noise_uncond)


def attention_head(x, states, w_q, w_k, w_v):
    q, k, v = x @ w_q, states @ w_k, states @ w_v
    return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1) @ v


def attention_first_batch_keys(x, states, w_q, w_k, w_v):
    q, k, v = x @ w_q, states[0] @ w_k, states[0] @ w_v  # right when the batch holds one picture
    return torch.softmax(q @ k.T / math.sqrt(q.shape[-1]), dim=-1) @ v


def attention_fixed_width(x, states, w_q, w_k, w_v):
    q, k, v = x @ w_q, states @ w_k, states @ w_v
    return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(16), dim=-1) @ v


def attention_in_place(x, states, w_q, w_k, w_v):
    q = x @ w_q
    k, v = states @ w_k, states @ w_v
    states.mul_(0)  # "free the memory": the caller's states are gone
    return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1) @ v


def guided_step(unet, scheduler, latents, t, cond, uncond, scale):
    both = scheduler.scale_model_input(torch.cat([latents, latents]), t)
    u, c = unet(both, t, encoder_hidden_states=torch.cat([uncond, cond])).sample.chunk(2)
    return scheduler.step(u + scale * (c - u), t, latents).prev_sample


def guided_step_two_calls(unet, scheduler, latents, t, cond, uncond, scale):
    x = scheduler.scale_model_input(latents, t)
    u, c = (unet(x, t, encoder_hidden_states=states)[0] for states in (uncond, cond))
    return scheduler.step(u + scale * (c - u), t, latents, return_dict=False)[0]


def guided_step_unscaled(unet, scheduler, latents, t, cond, uncond, scale):  # step 4's loop: right for DDIM only
    u, c = unet(torch.cat([latents] * 2), t, encoder_hidden_states=torch.cat([uncond, cond])).sample.chunk(2)
    return scheduler.step(u + scale * (c - u), t, latents).prev_sample


def guided_step_notebook_scheduler(unet, scheduler, latents, t, cond, uncond, scale):
    """Ignores its scheduler for the one the notebook builds: DDIM, 20 steps."""
    return guided_step(unet, sd.checks.ch7._scheduler("ddim", 20), latents, t, cond, uncond, scale)


def unet_input_shape(batch, height, width, scale):
    return (2 * batch if scale > 1 else batch, 4, height // 4, width // 4)


ANSWERS: dict[str, Answers] = {
    "check_unet_input_shape": Answers(
        unet_input_shape,
        also_right=[lambda b, h, w, s: torch.Size([b * (1 + (s != 1)), 4, h // 4, w // 4]),
                    lambda b, h, w, s: [b * (2 if s > 1 else 1), 4, h / 4, w / 4]],
        fragile=[
            (lambda b, h, w, s: (2, 4, 16, 16), "same numbers for other inputs"),  # copied from the trace
            (lambda b, h, w, s: (2 * b, 4, h // 4, w // 4), "skips the unconditional"),
            (lambda b, h, w, s: (2 * b, 4, 16, 16), "off by"),  # the trace's canvas for any picture size
            (lambda b, h, w, s: (2 * b if s > 1 else b, 4, h // 8, w // 8), "8 is Stable Diffusion 1's"),
            (lambda b, h, w, s: (2 * b if s > 1 else b, 4, w // 4, h // 4), "height comes before the width"),
            (lambda b, h, w, s: (b, 4, h // 4, w // 4), "two copies"),
        ],
        tensor_inputs=False),
    "check_alphas_cumprod": Answers(
        alphas_cumprod,
        also_right=[lambda b: (1 - b).numpy().cumprod(), lambda b: torch.cumprod(1 - b.float(), 0).to(b.dtype),
                    lambda b: torch.exp(torch.cumsum(torch.log1p(-b), 0))],
        fragile=[
            (lambda b: linear.alphas_cumprod.to(b.dtype), SCHEDULE),
            (lambda b: torch.cumprod(1 - sd.schedules.make_betas("linear", num_train_timesteps=50, beta_start=0.01,
                                                                 beta_end=0.2), 0), "ᾱ"),
            (alphas_cumprod_float64_one, DTYPE),
            (alphas_cumprod_in_place, IN_PLACE),
            (lambda b: torch.cumprod(1 - b, 0)[:50], "shape"),
        ]),
    "check_add_noise": Answers(
        add_noise,
        also_right=[lambda x0, e, t, ab: torch.lerp(e * 0, x0, 1) * ab[t].sqrt() + (1 - ab[t]).sqrt() * e,
                    lambda x0, e, t, ab: (ab[t].sqrt() * x0 + (1 - ab[t]).sqrt() * e).numpy()],
        fragile=[
            (lambda x0, e, t, ab: linear.add_noise(x0, e, t).to(x0.dtype), SCHEDULE),
            (lambda x0, e, t, ab: add_noise(x0, e, 600, ab), "x_t"),  # the notebook's t hard-coded
            (lambda x0, e, t, ab: add_noise(x0.double(), e, t, ab), DTYPE),  # "for precision"
            (add_noise_in_place, IN_PLACE),
            (add_noise_first_image, "shape"),
            (add_noise_own_noise, "x_t"),
        ]),
    "check_diffusion_loss": Answers(
        diffusion_loss,
        also_right=[lambda m, x0, e, t, ab: ((m(ab[t].sqrt()[:, None, None, None] * x0 + (1 - ab[t]).sqrt()
                                                [:, None, None, None] * e, t) - e) ** 2).mean()],
        fragile=[
            (_loss_with(lambda ab, t: cosine.alphas_cumprod[t].reshape(-1, 1, 1, 1).to(ab.dtype)), SCHEDULE),
            (_loss_with(lambda ab, t: ab[t]), "reshape it to (B, 1, 1, 1)"),  # right for one picture only
            (_loss_with(lambda ab, t: ab[t].reshape(-1, 1, 1, 1), torch.randn_like), "changes from one call"),
            (_loss_with(lambda ab, t: ab[t].reshape(-1, 1, 1, 1).double()), DTYPE),
            (loss_in_place, IN_PLACE),
            (loss_as_number, "no gradient"),
        ]),
    "check_loss_weight": Answers(
        loss_weight,
        also_right=[lambda a: 1 / (1 / a - 1), lambda a: (a / (1 - a)).numpy()],
        fragile=[
            (lambda a: VISIBLE_WEIGHTS.to(a.dtype), "shape"),
            (lambda a: a.double() / (1 - a.double()), DTYPE),
            (lambda a: a.div_(1 - a), IN_PLACE),
            (lambda a: (a / (1 - a)).flatten(), "shape"),
            (lambda a: torch.tensor([float(v / (1 - v)) for v in a]), DTYPE),  # float32 whatever it is given
        ]),
    "check_eps_or_x0": Answers(
        lambda: "b",
        also_right=[lambda: " B "],
        fragile=[(lambda: "a", "not (a)"), (lambda: "c", "not (c)"), (lambda: "d", "not (d)"),
                 (lambda: "e", "one of the letters"), (lambda: None, "one of the letters"),
                 (lambda: ["b"], "one of the letters")],
        tensor_inputs=False),
    "check_pred_original_sample": Answers(
        pred_original_sample,
        also_right=[lambda x, e, a: (x - torch.sqrt(1 - a) * e) * torch.rsqrt(a),
                    lambda x, e, a: pred_original_sample(x, e, a).numpy()],
        fragile=[
            (lambda x, e, a: pred_original_sample(x, e, cosine.alphas_cumprod[500].to(x.dtype)), "x̂0"),
            (lambda x, e, a: pred_original_sample(x, e, a).reshape(2, 1, 8, 8), "raised"),  # the page's shape
            (x0_in_place, IN_PLACE),
            (lambda x, e, a: pred_original_sample(x, e, a).squeeze(0), "shape"),  # wrong for one picture only
            (lambda x, e, a: pred_original_sample(x, e, a).float(), DTYPE),  # right only in float32
        ]),
    "check_ddim_step": Answers(
        ddim_step,
        also_right=[lambda e, t, x, p, ab: ddim_step(e, t, x, p, ab).numpy()],
        fragile=[
            (lambda e, t, x, p, ab: ddim_step(e, t, x, p, cosine.alphas_cumprod.to(ab.dtype)), SCHEDULE),
            (ddim_stride_20, "t − 20"),
            (ddim_last_step_float, "raised AttributeError"),
            (ddim_in_place, IN_PLACE),
            (lambda e, t, x, p, ab: ddim_step(e, t, x, p, ab).squeeze(0), "shape"),
        ]),
    "check_similarity_matrix": Answers(
        similarity_matrix,
        also_right=[lambda a, b, s: F.normalize(a, dim=1) @ F.normalize(b, dim=1).T * s.exp(),
                    lambda a, b, s: s.exp() * F.cosine_similarity(a[:, None], b[None], dim=-1)],
        fragile=[
            (lambda a, b, s: 100.0 * _unit(a) @ _unit(b).T, "similarity matrix"),  # CLIP's scale hard-coded
            (lambda a, b, s: s.exp() * (_unit(a) * _unit(b)).sum(-1, keepdim=True), "raised"),  # one pair only
            (lambda a, b, s: similarity_matrix(a.double(), b.double(), s), DTYPE),
            (similarity_in_place, IN_PLACE),
            (lambda a, b, s: similarity_matrix(a, b, s)[:, :3], "shape"),  # the notebook's 3 captions
        ]),
    "check_contrastive_loss": Answers(
        contrastive_loss,
        also_right=[sd.clip.contrastive_loss,
                    lambda z: -(z.log_softmax(1).diagonal().mean() + z.log_softmax(0).diagonal().mean()) / 2],
        fragile=[
            (lambda z: (F.cross_entropy(z, torch.arange(4)) + F.cross_entropy(z.T, torch.arange(4))) / 2, "raised"),
            (lambda z: F.cross_entropy(z, torch.zeros(len(z), dtype=torch.long)), "the loss"),
            (lambda z: contrastive_loss(z.double()), DTYPE),
            (contrastive_in_place, IN_PLACE),
            (lambda z: contrastive_loss(z).item(), "plain number"),
        ]),
    "check_reparameterise": Answers(
        reparameterise,
        also_right=[sd.vae.reparameterise, lambda m, lv, e: m + torch.sqrt(torch.exp(lv)) * e],
        fragile=[
            (lambda m, lv, e: m + torch.exp(0.5 * lv) * torch.randn_like(m), "your own noise"),
            (lambda m, lv, e: reparameterise(m.double(), lv, e), DTYPE),
            (lambda m, lv, e: m.add_(torch.exp(0.5 * lv) * e), IN_PLACE),
            (lambda m, lv, e: reparameterise(m, lv, e)[:1], "shape"),
            (lambda m, lv, e: m + math.exp(0.5) * e, "z"),  # one σ for every number
        ]),
    "check_kl_divergence": Answers(
        kl_divergence,
        also_right=[sd.vae.kl_divergence, lambda m, lv: 0.5 * (m**2 + lv.exp() - 1 - lv).sum(dim=(1, 2, 3))],
        fragile=[
            (lambda m, lv: 0.5 * (m**2 + lv.exp() - 1 - lv).sum(), "one KL per image"),  # right for one image
            (lambda m, lv: kl_divergence(m.double(), lv.double()), DTYPE),
            (lambda m, lv: 0.5 * (m.pow_(2) + lv.exp() - 1 - lv).flatten(1).sum(1), IN_PLACE),
            (lambda m, lv: 0.5 * (m**2 + lv.exp() - 1 - lv).flatten(1).mean(1), "averaged"),
            (lambda m, lv: 0.5 * (m**2 + lv.exp() - 1 - lv).sum(1), "shape"),
        ]),
    "check_classifier_free_guidance": Answers(
        classifier_free_guidance,
        also_right=[lambda u, c, s: torch.lerp(u, c, s), sd.guidance.classifier_free_guidance],
        fragile=[
            (lambda u, c, s: classifier_free_guidance(u, c, 7.5), "at scale"),  # the notebook's scale
            (lambda u, c, s: u.add_(s * (c - u)), IN_PLACE),
            (lambda u, c, s: classifier_free_guidance(u.half(), c.half(), s).to(u.dtype), "off by"),  # "saves memory"
            (lambda u, c, s: classifier_free_guidance(u, c, s)[:1], "shape"),
            (lambda u, c, s: classifier_free_guidance(u, c, round(s)), "off by"),
        ]),
    "check_cross_attention_head": Answers(
        attention_head,
        also_right=[lambda x, st, q, k, v: F.scaled_dot_product_attention(x @ q, st @ k, st @ v)],
        fragile=[
            (attention_first_batch_keys, "off by"),
            (attention_fixed_width, "off by"),
            (lambda x, st, q, k, v: attention_head(x.double(), st.double(), q.double(), k.double(), v.double()),
             DTYPE),
            (attention_in_place, IN_PLACE),
            (lambda x, st, q, k, v: torch.softmax((x @ q) @ (st @ k).transpose(-1, -2), dim=-1) @ (st @ v), "√d"),
        ]),
    "check_guided_step": Answers(
        guided_step,
        also_right=[guided_step_two_calls],
        fragile=[
            (guided_step_unscaled, "scale_model_input"),
            (guided_step_notebook_scheduler, "raised IndexError"),  # Euler's float t indexes nothing in DDIM
            (lambda unet, sch, x, t, c, u, s: guided_step(unet, sch, x, t, c, u, 3.0), "off by"),  # the notebook's scale
            (lambda unet, sch, x, t, c, u, s: guided_step(unet, sch, x, t, c, u, s)[:1], "shape"),
            (lambda unet, sch, x, t, c, u, s: guided_step(unet, sch, x.double(), t, c.double(), u.double(), s), DTYPE),
            (lambda unet, sch, x, t, c, u, s: guided_step(unet, sch, x, t, u, c, s), "wrong way"),
        ]),
}
