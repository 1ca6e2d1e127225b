"""PPG's auxiliary phase: every N calls, distil value targets into the policy network."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch as th

from sb3_ppo_variants.common.distributions import torch_distribution
from sb3_ppo_variants.common.errors import HyperparameterError
from sb3_ppo_variants.common.validation import check_number
from sb3_ppo_variants.components.hooks import TrainingContext
from sb3_ppo_variants.components.kl import exact_kl
from sb3_ppo_variants.components.protocol import LossComponent, LossTerm, Minibatch


@dataclass
class PhasicAuxiliaryPhase(LossComponent):
    """Phasic Policy Gradient's auxiliary phase (Cobbe et al., ICML 2021, arXiv:2009.04416;
    CleanRL's ``ppg_procgen.py``, whose defaults these are).

    Each ``train()`` call keeps its rollout's observations and value targets (the GAE returns).
    Every ``n_iterations`` calls (``N_pi``), after that call's epochs, ``aux_epochs`` (``E_aux``)
    epochs over everything kept minimise

    ``L = 1/2 (V_aux(s) - V_targ)^2 + beta_clone KL(pi_old(.|s) || pi(.|s)) + 1/2 (V(s) - V_targ)^2``

    where ``V_aux`` is the auxiliary head on the policy network (a
    :class:`~sb3_ppo_variants.algorithms.policies.PhasicActorCriticPolicy`), ``pi_old`` the policy at the
    start of the phase and ``V`` the critic; then the kept data is dropped. The policy phase is the
    rest of the loss (the ``ppg`` variant: PPO with one epoch per call, ``E_pi = E_V = 1``).
    Minibatches of the phase are random samples of ``aux_batch_size`` (CleanRL takes whole
    rollouts of 4 environments; with SB3's feed-forward policies the order does not matter).

    **Memory**: the kept observations and targets of ``n_iterations`` rollouts, i.e.
    ``n_iterations x n_steps x n_envs`` observations as the rollout buffer stores them (for 84x84x4
    uint8 images, 32 x 256 x 8 of them is 1.8 GB; for CartPole's 4 floats, 1 MB), saved with the
    model as tensor state (the kept data, and the count of calls) so training resumes exactly.
    ``PPOVariant`` only: masked and recurrent policies are refused.

    Logs, after each phase, ``aux_value_loss``, ``aux_kl`` and ``aux_critic_loss``.
    """

    n_iterations: int = 32
    """``N_pi``: calls of the policy phase between auxiliary phases."""
    aux_epochs: int = 6
    """``E_aux``: epochs over the kept rollouts in each auxiliary phase."""
    beta_clone: float = 1.0
    """Weight of the KL that keeps the policy where it was while its network learns values."""
    aux_batch_size: int | None = None
    """Samples per update of the phase; ``None``: the algorithm's ``batch_size``."""

    name: ClassVar[str] = "phasic_auxiliary_phase"

    def __post_init__(self) -> None:
        for key in ("n_iterations", "aux_epochs"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise HyperparameterError(f"{key}={value!r} is invalid: accepted values are integers >= 1.")
        check_number("beta_clone", self.beta_clone)
        if self.aux_batch_size is not None and (not isinstance(self.aux_batch_size, int) or self.aux_batch_size < 2):
            raise HyperparameterError(
                f"aux_batch_size={self.aux_batch_size!r} is invalid: accepted values are integers >= 2, or None."
            )
        self.kept: dict[str, th.Tensor] = {}
        self.calls = th.zeros((), dtype=th.int64)

    def check_model(self, model: Any) -> None:
        if not callable(getattr(model.policy, "auxiliary_values", None)):  # the auxiliary head's
            raise HyperparameterError(
                f"loss component {self.name!r} is invalid for policy {type(model.policy).__name__}: accepted "
                "policies are PhasicActorCriticPolicy and its subclasses (aliases 'PhasicMlpPolicy', "
                "'PhasicCnnPolicy', 'PhasicMultiInputPolicy' of PPOVariant), which have the auxiliary value head."
            )

    def __call__(self, batch: Minibatch) -> LossTerm:
        return LossTerm(None)

    def before_train(self, context: TrainingContext) -> None:
        buffer = context.rollout_buffer
        observations = buffer.observations
        new = {"returns": _flat(buffer.returns, ())}
        if isinstance(observations, dict):
            for key, value in observations.items():
                new[f"obs:{key}"] = _flat(value, buffer.obs_shape[key])
        else:
            new["obs"] = _flat(observations, buffer.obs_shape)
        for key, tensor in new.items():
            self.kept[key] = tensor if key not in self.kept else th.cat((self.kept[key], tensor))

    def extra_phase(self, context: TrainingContext) -> dict[str, float]:
        self.calls += 1
        if int(self.calls) % self.n_iterations:
            return {}
        stats = self._auxiliary_phase(context)
        self.kept = {}
        return stats

    def _auxiliary_phase(self, context: TrainingContext) -> dict[str, float]:
        policy = context.policy
        device = policy.device
        targets = self.kept["returns"]
        if context.value_transform is not None:  # the critic predicts normalised values
            targets = context.value_transform.normalize_values(targets)
        old_policy = context.policy_copy()
        batch_size = self.aux_batch_size or context.minibatch_size
        stats: dict[str, list[th.Tensor]] = defaultdict(list)
        policy.set_training_mode(True)
        for _ in range(self.aux_epochs):
            for indices in th.randperm(len(targets)).split(batch_size):
                observations = self._observations(indices, device)
                target = targets[indices].to(device)
                with th.no_grad():
                    old = torch_distribution(old_policy.get_distribution(observations))
                new = torch_distribution(policy.get_distribution(observations))
                kl = exact_kl(old, new).mean()
                aux_value_loss = 0.5 * ((policy.auxiliary_values(observations).flatten() - target) ** 2).mean()
                critic_loss = 0.5 * ((policy.predict_values(observations).flatten() - target) ** 2).mean()
                context.step(aux_value_loss + self.beta_clone * kl + critic_loss)
                for key, value in (
                    ("aux_value_loss", aux_value_loss),
                    ("aux_kl", kl),
                    ("aux_critic_loss", critic_loss),
                ):
                    stats[key].append(value.detach())
        means = th.stack([th.stack(values).mean() for values in stats.values()]).tolist()  # one host read
        return dict(zip(stats, means, strict=True))

    def _observations(self, indices: th.Tensor, device: th.device) -> th.Tensor | dict[str, th.Tensor]:
        if "obs" in self.kept:
            return self.kept["obs"][indices].to(device)
        return {key[4:]: value[indices].to(device) for key, value in self.kept.items() if key.startswith("obs:")}


def _flat(array: np.ndarray, shape: tuple[int, ...]) -> th.Tensor:
    """A copy of a rollout array, one row per sample."""
    return th.as_tensor(np.array(array).reshape(-1, *shape))
