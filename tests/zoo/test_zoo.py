"""The RL Baselines3 Zoo runs our algorithms: train, enjoy, -optimize and --trial-id through
``python -m sb3_ppo_variants.zoo``, with the loss and schedules given in a Zoo YAML file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from rl_zoo3.utils import ALGOS
from stable_baselines3 import PPO
from stable_baselines3.common.utils import LinearSchedule

from sb3_ppo_variants import HyperparameterError, PPOVariant, RecurrentPPOVariant, TrainingDivergedError
from sb3_ppo_variants.components import ClippedSurrogate, EntropyBonus, KLPenalty, SPOSurrogate, ValueLoss
from sb3_ppo_variants.components.protocol import registered_components
from sb3_ppo_variants.zoo import ZooTrainingDivergedError, register, trial_hyperparameters, zoo_arguments
from sb3_ppo_variants.zoo.__main__ import main


@pytest.fixture
def zoo(tmp_path, monkeypatch):
    """Runs the launcher in this process, in ``tmp_path``; returns the saved model's path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", list(sys.argv))

    def run(*arguments: str) -> Path:
        assert main([*arguments, "-f", "logs", "--seed", "0"]) == 0
        algo, env = arguments[arguments.index("--algo") + 1], arguments[arguments.index("--env") + 1]
        return max((tmp_path / "logs" / algo).glob(f"{env}_*")) / f"{env}.zip"

    return run


def write_conf(path: Path, env_id: str, **hyperparameters) -> str:
    path.write_text(yaml.safe_dump({env_id: {"policy": "MlpPolicy", **hyperparameters}}))
    return str(path)


def test_the_zoo_trains_ppo_variant_with_its_own_hyperparameters_and_enjoy_loads_it(tmp_path):
    launcher = [sys.executable, "-m", "sb3_ppo_variants.zoo"]
    common = ["--algo", "ppo_variant", "--env", "CartPole-v1", "-f", str(tmp_path / "logs")]
    train = subprocess.run([*launcher, "train", *common, "-n", "2000"], capture_output=True, text=True, check=True)
    assert "hyperparams/ppo.yml" in train.stdout  # the Zoo's tuned CartPole values, without -conf
    enjoy = subprocess.run(
        [*launcher, "enjoy", *common, "--no-render", "-n", "300"], capture_output=True, text=True, check=True
    )
    assert "Mean reward" in enjoy.stdout
    model = PPOVariant.load(tmp_path / "logs/ppo_variant/CartPole-v1_1/CartPole-v1.zip", safe=True)
    assert (model.n_steps, model.batch_size, model.n_epochs) == (32, 256, 20)  # the Zoo's ppo.yml
    assert isinstance(model.learning_rate, LinearSchedule)  # its lin_0.001, as SB3's own schedule


def test_a_loss_and_schedules_in_a_zoo_yaml_reach_the_model(tmp_path, zoo):
    conf = write_conf(
        tmp_path / "conf.yml", "CartPole-v1", n_envs=4, n_timesteps=512, n_steps=64, n_minibatches=4,
        ent_coef="lin_0.01", clip_range="lin_0.3",
        loss=["clipped_surrogate", "entropy", {"name": "value", "clip_range": "lin_0.5"},
              {"name": "kl_penalty", "target": 0.02}],
    )  # fmt: skip
    model = PPOVariant.load(zoo("train", "--algo", "ppo_variant", "--env", "CartPole-v1", "-conf", conf), safe=True)
    surrogate, entropy, value, penalty = model.loss
    assert model.batch_size == 64 * 4 // 4  # n_minibatches cuts the rollout
    assert model.clip_range(1.0) == pytest.approx(0.3) and model.clip_range(0.5) == pytest.approx(0.15)
    assert isinstance(surrogate, ClippedSurrogate) and surrogate.clip_range(0.5) == pytest.approx(0.15)
    assert isinstance(entropy, EntropyBonus) and entropy.coef(0.5) == pytest.approx(0.005)
    assert isinstance(value, ValueLoss) and value.clip_range(0.5) == pytest.approx(0.25)
    assert isinstance(penalty, KLPenalty) and penalty.target == 0.02


def test_a_named_variant_in_a_zoo_yaml(tmp_path, zoo):
    conf = write_conf(tmp_path / "conf.yml", "Pendulum-v1", n_envs=2, n_timesteps=512, n_steps=256, variant="spo")
    model = PPOVariant.load(zoo("train", "--algo", "ppo_variant", "--env", "Pendulum-v1", "-conf", conf))
    assert isinstance(model.loss[0], SPOSurrogate)


def test_ppo_variant_under_the_zoo_is_the_zoos_ppo_bit_for_bit(zoo):
    budget = ["-n", "4096", "--env", "Pendulum-v1"]  # one rollout of the Zoo's Pendulum setting, gSDE included
    ours = PPOVariant.load(zoo("train", "--algo", "ppo_variant", *budget))
    sb3 = PPO.load(zoo("train", "--algo", "ppo", *budget))
    assert ALGOS["ppo"] is PPO and "ppo_mask_variant" not in ALGOS  # the Zoo's own entries are kept
    for name, parameter in sb3.policy.state_dict().items():
        assert ours.policy.state_dict()[name].equal(parameter), name


def test_optimize_samples_our_space_and_a_trial_converts_back(tmp_path, zoo):
    storage = f"sqlite:///{tmp_path / 'zoo.db'}"
    study = ["--storage", storage, "--study-name", "s", "--env", "CartPole-v1", "--algo", "ppo_variant"]
    zoo("train", *study, "-optimize", "--n-trials", "2", "--n-jobs", "2", "-n", "1024",
        "--n-evaluations", "1", "--eval-episodes", "2")  # fmt: skip
    trials = optuna.load_study(study_name="s", storage=storage).trials
    assert len(trials) == 2 and all("variant" in t.params for t in trials)  # the loss is sampled
    model = PPOVariant.load(zoo("train", *study, "--trial-id", "1", "-n", "1024"))
    expected = trial_hyperparameters(trials[1].params)
    linked = registered_components()[expected["loss"][0]["name"]].linked
    assert [entry["name"] for entry in model.loss_config()] == [entry["name"] for entry in expected["loss"]]
    assert model.loss_config()[0] == {k: v for k, v in expected["loss"][0].items() if k not in linked}  # the surrogate
    assert model.n_steps == expected["n_steps"] and model.gamma == pytest.approx(expected["gamma"])


def test_the_recurrent_variant_is_registered_with_the_zoos_lstm_values(zoo):
    model = RecurrentPPOVariant.load(
        zoo("train", "--algo", "ppo_lstm_variant", "--env", "CartPoleNoVel-v1", "-n", "256")
    )
    assert model.policy_kwargs["lstm_hidden_size"] == 64  # from the Zoo's ppo_lstm.yml


def test_bad_zoo_hyperparameters_are_refused_with_their_name():
    with pytest.raises(HyperparameterError, match="variant='nope'"):
        zoo_arguments("MlpPolicy", {}, 1, variant="nope")
    with pytest.raises(HyperparameterError, match="ent_coef='lin_x'"):
        zoo_arguments("MlpPolicy", {"ent_coef": "lin_x"}, 1)
    with pytest.raises(HyperparameterError, match="n_minibatches=0"):
        zoo_arguments("MlpPolicy", {}, 1, n_minibatches=0)
    assert issubclass(ZooTrainingDivergedError, TrainingDivergedError | ValueError)  # the Zoo prunes ValueErrors


def test_register_is_idempotent_and_keeps_the_zoos_algorithms():
    before = dict(ALGOS)
    register()
    register()
    assert {k: v for k, v in ALGOS.items() if k in before} == before
