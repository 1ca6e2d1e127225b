"""Invalid hyperparameters fail at construction, naming the parameter and the accepted values."""

import re
import warnings

import pytest

from sb3_ppo_variants import HyperparameterError, NoValueLossWarning, PPOVariant
from sb3_ppo_variants.components import ClippedSurrogate, EntropyBonus, KLPenalty, ValueLoss

BAD_ARGUMENTS = {
    "clip_range": (-0.1, "clip_range=-0.1 is invalid: accepted values are numbers > 0.0 or a schedule"),
    "clip_range_vf": (-0.2, "clip_range_vf=-0.2 is invalid: accepted values are numbers > 0.0 or a schedule"),
    "ent_coef": (-0.01, "ent_coef=-0.01 is invalid: accepted values are numbers >= 0.0 or a schedule"),
    "vf_coef": (-1.0, "vf_coef=-1.0 is invalid: accepted values are numbers >= 0.0."),
    "learning_rate": (-3e-4, "learning_rate=-0.0003 is invalid: accepted values are numbers >= 0.0 or a schedule"),
    "n_epochs": (0, "n_epochs=0 is invalid: accepted values are integers >= 1."),
    "gamma": (1.5, "gamma=1.5 is invalid: accepted values are numbers in [0.0, 1.0]."),
    "gae_lambda": (-0.1, "gae_lambda=-0.1 is invalid: accepted values are numbers in [0.0, 1.0]."),
    "max_grad_norm": (0.0, "max_grad_norm=0.0 is invalid: accepted values are numbers > 0.0."),
    "target_kl": (-0.01, "target_kl=-0.01 is invalid: accepted values are numbers > 0.0, or None."),
    "n_steps": (0, "n_steps=0 is invalid: accepted values are integers >= 1."),
}


@pytest.mark.parametrize("name", list(BAD_ARGUMENTS))
def test_bad_ppo_argument_raises_value_error_naming_it(name):
    value, message = BAD_ARGUMENTS[name]
    with pytest.raises(ValueError, match=re.escape(message)):
        PPOVariant("MlpPolicy", "CartPole-v1", **{name: value})


def test_sb3_assertions_still_catch_our_errors():
    # SB3 asserts these; code that catches AssertionError keeps working.
    with pytest.raises(AssertionError, match=re.escape("clip_range_vf=-0.2")):
        PPOVariant("MlpPolicy", "CartPole-v1", clip_range_vf=-0.2)
    with pytest.raises(AssertionError, match=re.escape("n_steps=1 with n_envs=1 gives a rollout buffer of 1 sample")):
        PPOVariant("MlpPolicy", "CartPole-v1", n_steps=1)
    with pytest.raises(AssertionError, match="batch_size=1 is invalid with normalize_advantage=True"):
        PPOVariant("MlpPolicy", "CartPole-v1", batch_size=1)
    assert issubclass(HyperparameterError, ValueError) and issubclass(HyperparameterError, AssertionError)


def test_batch_that_does_not_divide_the_buffer_only_warns():
    with pytest.warns(UserWarning, match="mini-batch size of 100"):
        PPOVariant("MlpPolicy", "CartPole-v1", n_steps=256, batch_size=100)


def test_unknown_component_name_lists_the_accepted_names():
    with pytest.raises(
        ValueError, match=r"loss component name='klpenalty' is unknown: accepted values are .*kl_penalty"
    ):
        PPOVariant("MlpPolicy", "CartPole-v1", loss=[{"name": "klpenalty"}])


def test_a_misspelt_component_name_suggests_the_closest():
    with pytest.raises(HyperparameterError, match="Did you mean 'clipped_surrogate'"):
        PPOVariant("MlpPolicy", "CartPole-v1", loss=["clipped_surogate", "value"])


def test_a_loss_that_never_trains_the_critic_warns_and_can_be_silenced():
    with pytest.warns(NoValueLossWarning, match=r"loss=\[clipped_surrogate\] has no component that trains the value"):
        PPOVariant("MlpPolicy", "CartPole-v1", loss=["clipped_surrogate"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PPOVariant("MlpPolicy", "CartPole-v1", loss=["clipped_surrogate", "value"])  # SB3's terms: no warning
        warnings.filterwarnings("ignore", category=NoValueLossWarning)
        PPOVariant("MlpPolicy", "CartPole-v1", loss=["clipped_surrogate"])  # meant, and said so


def test_unknown_component_parameter_lists_the_accepted_parameters():
    message = "loss component 'kl_penalty' has no parameter kl_target: accepted parameters are coef, target, adaptive"
    with pytest.raises(ValueError, match=re.escape(message)):
        PPOVariant("MlpPolicy", "CartPole-v1", loss=[{"name": "kl_penalty", "kl_target": 0.01}])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ClippedSurrogate(clip_range=0), "clip_range=0 is invalid: accepted values are numbers > 0.0"),
        (lambda: ClippedSurrogate(dual_clip=0.5), "dual_clip=0.5 is invalid: accepted values are numbers > 1.0"),
        (lambda: ValueLoss(coef=-1), "coef=-1 is invalid: accepted values are numbers >= 0.0."),
        (lambda: EntropyBonus(coef=-0.1), "coef=-0.1 is invalid"),
        (lambda: KLPenalty(target=0), "target=0 is invalid: accepted values are numbers > 0.0."),
        (lambda: KLPenalty(rule="pid"), "rule='pid' is invalid: accepted values are one of 'paper', 'rllib'."),
        (lambda: KLPenalty(estimator="k4"), "estimator='k4' is invalid: accepted values are one of 'exact', 'k1'"),
        (lambda: KLPenalty(coef=0.0), "coef=0.0 is invalid: accepted values are numbers > 0.0."),  # adaptive x 0
    ],
)
def test_bad_component_parameter(make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make()


def test_dict_spec_is_checked_like_an_instance():
    with pytest.raises(ValueError, match=re.escape("rule='pid' is invalid")):
        PPOVariant("MlpPolicy", "CartPole-v1", loss=[{"name": "kl_penalty", "rule": "pid"}])


def test_ppo_argument_that_contradicts_the_loss():
    message = "clip_range=0.3 contradicts loss component 'clipped_surrogate' (clip_range=0.1)"
    with pytest.raises(ValueError, match=re.escape(message)):
        PPOVariant("MlpPolicy", "CartPole-v1", clip_range=0.3, loss=[ClippedSurrogate(clip_range=0.1), ValueLoss()])


def test_ppo_argument_without_a_component_to_take_it():
    message = "ent_coef=0.01 has no effect because no component in loss= uses it"
    with pytest.raises(ValueError, match=re.escape(message)):
        PPOVariant("MlpPolicy", "CartPole-v1", ent_coef=0.01, loss=[ClippedSurrogate(), ValueLoss()])


def test_agreeing_ppo_argument_is_accepted():
    model = PPOVariant("MlpPolicy", "CartPole-v1", clip_range=0.1, loss=[ClippedSurrogate(clip_range=0.1), ValueLoss()])
    assert model.clip_range(1.0) == 0.1


def test_loss_must_not_be_empty_or_link_an_attribute_twice():
    with pytest.raises(ValueError, match=re.escape("loss=[] is invalid")):
        PPOVariant("MlpPolicy", "CartPole-v1", loss=[])
    with pytest.raises(ValueError, match=r"two components .* that both set the algorithm's 'vf_coef'"):
        PPOVariant("MlpPolicy", "CartPole-v1", loss=[ClippedSurrogate(), ValueLoss(), ValueLoss()])
