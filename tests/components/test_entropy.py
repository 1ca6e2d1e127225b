"""The entropy bonus."""

import pytest
import torch as th

from sb3_ppo_variants.components import (
    EntropyBonus,
)
from tests.conftest import make_batch


def test_entropy_bonus_with_and_without_closed_form():
    entropy = th.tensor([0.5, 1.0], requires_grad=True)
    term = EntropyBonus(coef=0.1)(make_batch(entropy=entropy))
    assert term.loss.item() == pytest.approx(-0.1 * 0.75)
    assert term.stats["entropy_loss"].item() == pytest.approx(-0.75)
    (grad,) = th.autograd.grad(term.loss, entropy)
    assert grad.tolist() == pytest.approx([-0.05, -0.05])
    # No closed form: -log pi estimates the entropy, as in SB3.
    term = EntropyBonus(coef=0.1)(make_batch(log_prob=[-2.0, -1.0]))
    assert term.stats["entropy_loss"].item() == pytest.approx(-1.5)
