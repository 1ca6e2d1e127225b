"""Ending a call's epochs on the ratios (ESPO's rule)."""

import pytest

from sb3_ppo_variants import HyperparameterError, PPOVariant
from sb3_ppo_variants.components import (
    RatioDeviationEarlyStop,
    Surrogate,
    ValueLoss,
)
from sb3_ppo_variants.variants import variant_arguments
from tests.conftest import FAST, make_batch


def test_ratio_deviation_stop_reads_the_mean_or_median_of_the_ratios_distance_from_one():
    batch = make_batch(ratio=[1.1, 0.8, 1.5])  # |r - 1|: 0.1, 0.2, 0.5
    assert RatioDeviationEarlyStop(max_deviation=0.25).stop_early(batch) == "reaching a ratio deviation of 0.27"
    assert RatioDeviationEarlyStop(max_deviation=0.25, statistic="median").stop_early(batch) is None
    assert RatioDeviationEarlyStop()(batch).stats["ratio_deviation"].item() == pytest.approx(0.8 / 3)
    with pytest.raises(HyperparameterError, match="statistic"):
        RatioDeviationEarlyStop(statistic="max")


def test_espo_allows_three_times_ppos_epochs_and_its_rule_ends_them():
    assert variant_arguments("espo", {"n_epochs": 4})["n_epochs"] == 12
    assert variant_arguments("espo")["n_epochs"] == 30  # SB3's default, 10, times 3
    loss = [Surrogate(), ValueLoss(), RatioDeviationEarlyStop(max_deviation=1e-9)]
    model = PPOVariant("MlpPolicy", "CartPole-v1", loss=loss, **{**FAST, "n_epochs": 5}).learn(64 * 4)
    # Each call's first step moves the policy, so the second minibatch stops the call in its first epoch:
    # four calls, one epoch each of the five allowed.
    assert model.logger.name_to_value["train/n_updates"] == 4


def test_espo_ends_a_call_after_its_maximum_of_minibatch_updates_as_rl_x():
    stop = RatioDeviationEarlyStop(max_deviation=0.25, max_updates=3)
    batch = make_batch(ratio=[1.0, 1.1, 0.9])  # well inside the deviation: only the count stops it
    stop.before_train(None)
    assert [stop.stop_early(batch) for _ in range(4)] == [None, None, None, "reaching 3 minibatch updates"]
    stop.before_train(None)  # each call counts its own
    assert stop.stop_early(batch) is None
    with pytest.raises(HyperparameterError, match="max_updates=0 is invalid: accepted values are integers >= 1"):
        RatioDeviationEarlyStop(max_updates=0)
