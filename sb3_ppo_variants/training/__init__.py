"""The training engine the three algorithms share.

- ``algorithm.py``: :class:`LossComponentsMixin`, the loss's configuration, saving and loading;
- ``loop.py``: the ``train()`` loop, its statistics and the divergence guard;
- ``minibatches.py``: gathering minibatches bit for bit as ``rollout_buffer.get()``;
- ``advantages.py``: advantage normalisation and recomputation;
- ``scoring.py``: evaluating a minibatch and summing the components' terms;
- ``compiled.py``: the ``compile=True`` fast path;
- ``optimizer_step.py``: ``FlatAdam``, the optimizer step over flat buffers;
- ``rollout.py``: value predictions in return units while collecting;
- ``arguments.py``: the PPO argument rules and the default loss;
- ``distributions.py``: SB3 distribution helpers.
"""

from sb3_ppo_variants.training.algorithm import LossComponentsMixin
from sb3_ppo_variants.training.arguments import LINKED_DEFAULTS, check_ppo_arguments, default_loss
from sb3_ppo_variants.training.scoring import MinibatchScorer, PolicyEvaluation, ScoredMinibatch

__all__ = [
    "LINKED_DEFAULTS",
    "LossComponentsMixin",
    "MinibatchScorer",
    "PolicyEvaluation",
    "ScoredMinibatch",
    "check_ppo_arguments",
    "default_loss",
]
