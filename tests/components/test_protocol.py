"""What every component shares: padding-aware means, clear errors for bad parameters."""

import pytest
import torch as th

from sb3_ppo_variants import HyperparameterError
from sb3_ppo_variants.components import (
    ClippedSurrogate,
    EntropyBonus,
    KLPenalty,
    RollbackSurrogate,
    SPOSurrogate,
    TrustRegionRollbackSurrogate,
    ValueLoss,
)
from tests.conftest import make_batch


def test_masked_mean_ignores_padding_in_every_component():
    plain = make_batch(
        ratio=[0.5, 1.5], advantages=[1.0, 2.0], values=[1.0, 2.0], returns=[0.0, 0.0], entropy=th.tensor([0.3, 0.6])
    )
    padded = make_batch(
        ratio=[0.5, 1.5, 9.0],
        advantages=[1.0, 2.0, -7.0],
        values=[1.0, 2.0, 50.0],
        returns=[0.0, 0.0, 3.0],
        entropy=th.tensor([0.3, 0.6, 4.0]),
        mask=th.tensor([True, True, False]),
    )
    for component in (
        ClippedSurrogate(),
        ValueLoss(clip_range=0.3),
        EntropyBonus(coef=0.1),
        KLPenalty(adaptive=False, estimator="k3"),
    ):
        assert component(padded).loss.item() == pytest.approx(component(plain).loss.item())


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ClippedSurrogate(clip_range_high=0.0), "clip_range_high=0.0 is invalid: accepted values are numbers"),
        (lambda: RollbackSurrogate(rollback=-0.3), "rollback=-0.3 is invalid: accepted values are numbers >= 0"),
        (lambda: TrustRegionRollbackSurrogate(kl_range=0), "kl_range=0 is invalid: accepted values are numbers > 0"),
        (lambda: SPOSurrogate(clip_range=0), "clip_range=0 is invalid"),
        (lambda: ValueLoss(clip_mode="max"), "clip_mode='max' is invalid: accepted values are one of 'prediction'"),
        (lambda: ValueLoss(error="l2"), "error='l2' is invalid: accepted values are one of 'squared', 'huber', 'l1'"),
    ],
)
def test_invalid_variant_parameters_name_the_parameter(build, message):
    with pytest.raises(HyperparameterError, match=message.replace("(", r"\(")):
        build()
