"""Automatic checks for the exercises: run a student's function on inputs drawn from a seed.

Every check has the same form, ``check_<name>(fn, *, seed=0) -> True``: it prints one line when
``fn`` is right on every case and raises :class:`ExerciseError` (an AssertionError, so nbgrader
and pytest count it as a failed test) with a message that names the likely slip otherwise.
Seed 0 gives the inputs the notebook shows; the autograder grades on other seeds as well.

One module per chapter holds its exercises; :mod:`sdlab.checks.core` holds what they share: the
closeness rule, the way a slip is named and the split between observing a call and judging it.
``EXERCISES`` maps each check's name to its :class:`~sdlab.checks.core.Exercise`.
"""

from sdlab.checks import ch0, ch1, ch2, ch3, ch4, ch5, ch6, ch7
from sdlab.checks.ch0 import check_unet_input_shape
from sdlab.checks.ch1 import check_add_noise, check_alphas_cumprod
from sdlab.checks.ch2 import check_diffusion_loss, check_eps_or_x0, check_loss_weight
from sdlab.checks.ch3 import check_ddim_step, check_pred_original_sample
from sdlab.checks.ch4 import check_contrastive_loss, check_similarity_matrix
from sdlab.checks.ch5 import check_kl_divergence, check_reparameterise
from sdlab.checks.ch6 import check_classifier_free_guidance, check_cross_attention_head
from sdlab.checks.ch7 import check_guided_step
from sdlab.checks.core import PASSED_MARK, Exercise, ExerciseError

EXERCISES: dict[str, Exercise] = {**ch0.EXERCISES, **ch1.EXERCISES, **ch2.EXERCISES, **ch3.EXERCISES, **ch4.EXERCISES,
                                  **ch5.EXERCISES, **ch6.EXERCISES, **ch7.EXERCISES}

__all__ = ["EXERCISES", "ExerciseError", "PASSED_MARK", "check_add_noise", "check_alphas_cumprod",
           "check_classifier_free_guidance", "check_contrastive_loss", "check_cross_attention_head",
           "check_ddim_step", "check_diffusion_loss", "check_eps_or_x0", "check_guided_step", "check_kl_divergence",
           "check_loss_weight", "check_pred_original_sample", "check_reparameterise", "check_similarity_matrix",
           "check_unet_input_shape"]
