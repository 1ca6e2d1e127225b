"""Collecting a rollout: SB3's ``collect_rollouts`` (and sb3-contrib's masked one, which differs
only by the masks), with the policy's forward of :mod:`~sb3_ppo_variants.rollout.inference`.

The steps, the random draws, the callbacks' calls and locals, the timeout bootstrap and the
buffer's contents are SB3's; :mod:`tests.parity.test_parity` and :mod:`tests.parity.test_contrib_parity` compare
whole ``learn()`` calls bit for bit. Policies and distributions that
:func:`~sb3_ppo_variants.rollout.inference.supports_rollout_forward` does not accept, and the
recurrent algorithm (its rollout carries LSTM states), use their SB3 base class's loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from sb3_contrib.common.maskable.buffers import MaskableRolloutBuffer
from sb3_contrib.common.maskable.utils import get_action_masks, is_masking_supported
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

from sb3_ppo_variants.common.errors import RolloutDivergedError
from sb3_ppo_variants.rollout.inference import RolloutForward


def collect_rollouts(
    self: Any,  # the algorithm, named as in SB3's method: callbacks read this function's locals
    env: VecEnv,
    callback: BaseCallback,
    rollout_buffer: RolloutBuffer,
    n_rollout_steps: int,
    forward: RolloutForward,
    use_masking: bool = False,
    env_step: Callable[[np.ndarray], VecEnvStepReturn] | None = None,
) -> bool:
    """Fill ``rollout_buffer`` with ``n_rollout_steps`` steps of every environment of ``env``;
    ``False`` if a callback stopped the rollout. ``use_masking``: sb3-contrib's masked rollout
    (the environment's action masks go to the policy and into the buffer). ``env_step``: what
    steps ``env`` (default ``env.step``; see :mod:`~sb3_ppo_variants.rollout.vec_envs`)."""
    assert self._last_obs is not None, "No previous observation was provided"
    self.policy.set_training_mode(False)
    n_steps = 0
    action_masks = None
    rollout_buffer.reset()
    if use_masking and not is_masking_supported(env):
        raise ValueError("Environment does not support action masking. Consider using ActionMasker wrapper")
    buffer_keeps_masks = hasattr(rollout_buffer, "action_masks")  # sb3-contrib's MaskableRolloutBuffer
    clip = isinstance(self.action_space, spaces.Box) and not self.policy.squash_output
    discrete = isinstance(self.action_space, spaces.Discrete)
    env_step = env_step or env.step
    add = _buffer_add(rollout_buffer, self.device)

    callback.on_rollout_start()

    while n_steps < n_rollout_steps:
        with th.no_grad():
            obs_tensor = obs_as_tensor(self._last_obs, self.device)
            if use_masking:
                action_masks = get_action_masks(env)
            try:
                actions, values, log_probs = forward(obs_tensor, action_masks)
            except RolloutDivergedError as error:
                raise RolloutDivergedError(f"rollout step {n_steps} (timestep {self.num_timesteps}): {error}") from None
        actions = actions.cpu().numpy()
        # Gaussian actions are unbounded: clip them to the action space (SB3's rollout does).
        clipped_actions = np.clip(actions, self.action_space.low, self.action_space.high) if clip else actions

        new_obs, rewards, dones, infos = env_step(clipped_actions)
        self.num_timesteps += env.num_envs

        callback.update_locals(locals())
        if not callback.on_step():
            return False

        self._update_info_buffer(infos, dones)
        n_steps += 1
        if discrete:
            actions = actions.reshape(-1, 1)

        # A time limit is not a terminal state: bootstrap with the value of the last observation
        # (SB3's issue #633).
        for idx, done in enumerate(dones):
            if (
                done
                and infos[idx].get("terminal_observation") is not None
                and infos[idx].get("TimeLimit.truncated", False)
            ):
                terminal_obs = self.policy.obs_to_tensor(infos[idx]["terminal_observation"])[0]
                with th.no_grad():
                    terminal_value = self.policy.predict_values(terminal_obs)[0]
                rewards[idx] += self.gamma * terminal_value

        masks = {"action_masks": action_masks} if buffer_keeps_masks else {}
        add(self._last_obs, actions, rewards, self._last_episode_starts, values, log_probs, **masks)
        self._last_obs = new_obs
        self._last_episode_starts = dones

    with th.no_grad():
        values = self.policy.predict_values(obs_as_tensor(new_obs, self.device))
    rollout_buffer.compute_returns_and_advantage(last_values=values, dones=dones)
    callback.update_locals(locals())
    callback.on_rollout_end()
    return True


def _buffer_add(buffer: RolloutBuffer, device: th.device) -> Callable[..., None]:
    """``buffer.add``; for SB3's ``RolloutBuffer`` and sb3-contrib's masked one on the CPU, its
    assignments without the copies it makes before assigning (an assignment copies)."""
    if type(buffer) not in (RolloutBuffer, MaskableRolloutBuffer) or th.device(device).type != "cpu":
        return buffer.add
    discrete_observations = isinstance(buffer.observation_space, spaces.Discrete)
    shape = (buffer.n_envs, *buffer.obs_shape)
    action_shape = (buffer.n_envs, buffer.action_dim)
    masks_shape = (buffer.n_envs, getattr(buffer, "mask_dims", 0))

    def add(
        obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        episode_start: np.ndarray,
        value: th.Tensor,
        log_prob: th.Tensor,
        action_masks: np.ndarray | None = None,
    ) -> None:
        position = buffer.pos
        if action_masks is not None:
            buffer.action_masks[position] = action_masks.reshape(masks_shape)  # type: ignore[attr-defined]
        if log_prob.dim() == 0:
            log_prob = log_prob.reshape(-1, 1)
        buffer.observations[position] = obs.reshape(shape) if discrete_observations else obs
        buffer.actions[position] = action.reshape(action_shape)
        buffer.rewards[position] = reward
        buffer.episode_starts[position] = episode_start
        buffer.values[position] = value.numpy().flatten()
        buffer.log_probs[position] = log_prob.numpy()
        buffer.pos += 1
        if buffer.pos == buffer.buffer_size:
            buffer.full = True

    return add
