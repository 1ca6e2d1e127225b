"""TRGPPO's trust-region bounds (Discrete and Gaussian) and its clip, against the authors' code."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch as th

from sb3_ppo_variants import HyperparameterError, PPOVariant
from sb3_ppo_variants.components import (
    TrustRegionGuidedSurrogate,
    ValueLoss,
    gaussian_trust_region_kl,
    gaussian_trust_region_ratio_bounds,
    trust_region_ratio_bounds,
)
from sb3_ppo_variants.variants import variant_arguments
from tests.conftest import FAST, grad_of, make_batch


def _multi_discrete_env() -> gym.Env:
    from stable_baselines3.common.envs import IdentityEnvMultiDiscrete

    return IdentityEnvMultiDiscrete(dim=2)


@pytest.mark.parametrize("p", [0.01, 0.1, 0.5, 0.9])
def test_trust_region_bounds_are_the_two_roots_of_the_kl_constraint(p):
    delta = 0.001
    lower, upper = trust_region_ratio_bounds(th.tensor([p], dtype=th.float64), delta)[0].tolist()

    def kl(r):  # KL(pi_old || pi) when pi gives the action p r and rescales the others
        return (1 - p) * math.log((1 - p) / (1 - p * r)) - p * math.log(r)

    assert kl(lower) == pytest.approx(delta, rel=1e-6) and kl(upper) == pytest.approx(delta, rel=1e-6)
    assert 0 < lower < 1 < upper < 1 / p
    # Second order in the move: KL ~ p x^2 / (2 (1 - p)), so the band is widest for unlikely actions.
    half_width = math.sqrt(2 * delta * (1 - p) / p)
    assert (upper - lower) / 2 == pytest.approx(half_width, rel=0.1)


def test_trgppo_with_the_papers_formula_only_widens_ppos_band_where_the_trust_region_is_wider():
    # p = 0.01: the trust region reaches r ~ 1.51, past PPO's 1.2; p = 0.5: it ends at ~1.045.
    old_log_prob = th.log(th.tensor([0.01, 0.5, 0.01, 0.5]))
    ratios, advantages = [1.4, 1.4, 1.6, 0.7], [1.0, 1.0, 1.0, -1.0]
    batch = make_batch(ratio=ratios, advantages=advantages, old_log_prob=old_log_prob)
    papers = TrustRegionGuidedSurrogate(clip_range=0.2, kl_range=0.001, widen_ppo_band=True, anneal=False)
    term = papers(batch)
    upper_rare = trust_region_ratio_bounds(th.tensor([0.01]), 0.001)[0, 1].item()
    objective = [1.4, 1.2, upper_rare, -0.8]  # inside the widened band; PPO's bound; the rare one's own; PPO's
    assert term.loss.item() == pytest.approx(-sum(objective) / 4, rel=1e-5)
    assert grad_of(term, batch.log_ratio) == pytest.approx([-1.4 / 4, 0.0, 0.0, 0.0], abs=1e-7)
    assert term.stats["clip_fraction"].item() == pytest.approx(0.75)


def test_trgppo_clips_discrete_actions_to_the_annealed_trust_region_bounds_alone_as_the_authors_code():
    old_log_prob = th.log(th.tensor([0.01, 0.5, 0.5]))
    ratios, advantages = [1.4, 1.03, 0.7], [1.0, 1.0, -1.0]
    (_low_rare, up_rare), (low_even, up_even) = trust_region_ratio_bounds(th.tensor([0.01, 0.5]), 0.001).tolist()
    for remaining in (1.0, 0.5):
        batch = make_batch(ratio=ratios, advantages=advantages, old_log_prob=old_log_prob)
        batch.progress_remaining = remaining
        term = TrustRegionGuidedSurrogate(clip_range=0.2)(batch)  # the defaults: delta 0.001, annealed
        # ppo2.py (kl2clip, Discrete): l <- 1 - (1 - l) f, u <- 1 + (u - 1) f; clip(r, l, u), no PPO band.
        upper_rare, upper_even = 1 + (up_rare - 1) * remaining, 1 + (up_even - 1) * remaining
        lower_even = 1 - (1 - low_even) * remaining
        objective = [min(1.4, upper_rare), min(1.03, upper_even), -max(0.7, lower_even)]
        assert term.loss.item() == pytest.approx(-sum(objective) / 3, rel=1e-5), remaining
    # At half the training every ratio is outside its band: 1.4 > 1.25 (rare), and the even action's band
    # [0.978, 1.022] clips 1.03 and 0.7, where PPO's [0.8, 1.2] would clip only 0.7.
    assert term.stats["clip_fraction"].item() == pytest.approx(1.0)


@pytest.mark.parametrize("dims", [1, 3])
def test_trgppos_gaussian_band_reaches_ppos_bound_at_the_old_mean_and_holds_the_kl_constraint(dims):
    kl = gaussian_trust_region_kl(0.2, dims)
    distances = th.tensor([0.0, 0.5, 1.5, 3.0], dtype=th.float64)
    bounds = gaussian_trust_region_ratio_bounds(distances, kl, dims)
    assert bounds[0, 1].item() == pytest.approx(1.2, rel=1e-6)  # the authors' base-clip choice of delta
    # In one dimension against a brute-force search over N(mu, v) with KL(N(mu, v) || N(0, 1)) <= delta / d.
    reach = math.sqrt(2 * kl / dims)  # the region's half-width in the mean; its log-variance is within 2.2 reach
    mean, log_variance = np.meshgrid(
        np.linspace(-1.1 * reach, 1.1 * reach, 2001), np.linspace(-2.5 * reach, 2.5 * reach, 2001)
    )
    variance = np.exp(log_variance)
    inside = variance - 1 - log_variance + mean**2 <= 2 * kl / dims
    for row, x in enumerate(distances.tolist()):
        log_ratio = (-0.5 * log_variance - (x - mean) ** 2 / (2 * variance) + x**2 / 2)[inside]
        expected = np.exp(dims * np.array([log_ratio.min(), log_ratio.max()]))
        assert bounds[row].tolist() == pytest.approx(expected.tolist(), rel=2e-3), x
    assert (bounds[1:, 1] > bounds[:-1, 1]).all() and (bounds[1:, 0] < bounds[:-1, 0]).all()  # wider further out


def test_trgppo_runs_on_gaussian_policies_and_refuses_spaces_the_authors_code_has_no_bounds_for():
    model = PPOVariant("MlpPolicy", "Pendulum-v1", **variant_arguments("trgppo", FAST)).learn(128)
    assert 0 < model.logger.name_to_value["train/trust_region_lower"] < 1
    assert model.logger.name_to_value["train/trust_region_upper"] > 1
    sde = PPOVariant("MlpPolicy", "Pendulum-v1", use_sde=True, **variant_arguments("trgppo", FAST)).learn(128)
    assert sde.logger.name_to_value["train/trust_region_upper"] > 1
    with pytest.raises(HyperparameterError, match="accepted spaces are Discrete and Box"):
        PPOVariant("MlpPolicy", _multi_discrete_env(), loss=[TrustRegionGuidedSurrogate(), ValueLoss()])
