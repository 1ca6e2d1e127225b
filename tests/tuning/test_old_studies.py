"""A study made before the search space spoke the variants' names (``policy_loss``) still reads,
reports and resumes: ``studies/before-variant-names.db`` was written by that code (4 random
trials on CartPole), with each trial's configuration as that code built it (the ``.json``)."""

import json
import shutil
from pathlib import Path

import optuna

from sb3_ppo_variants.persistence.config import to_plain
from sb3_ppo_variants.tuning import load_space, open_storage, open_study, ppo_variant_arguments, run_study
from sb3_ppo_variants.tuning.report import summary

STUDIES = Path(__file__).parent / "studies"
NAME = "before-variant-names"


def test_its_trials_rebuild_the_configurations_they_ran():
    recorded = json.loads((STUDIES / f"{NAME}.json").read_text())
    study = open_study(open_storage(f"sqlite:///{STUDIES / NAME}.db", None), NAME)
    assert {t.params["policy_loss"] for t in study.trials} == {"espo", "rollback", "penalty", "ewma"}
    for trial in study.trials:
        rebuilt = to_plain(ppo_variant_arguments(trial.params, recorded["n_envs"]))
        assert rebuilt == recorded["arguments"][str(trial.number)]


def test_it_resumes_with_trials_that_sample_variant_names(tmp_path):
    shutil.copy(STUDIES / f"{NAME}.db", tmp_path / "study.db")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = run_study(
        "CartPole-v1",
        n_trials=6,
        n_timesteps=512,
        storage=storage,
        study_name=NAME,
        space=load_space(STUDIES / "space.yaml"),
        sampler="random",
        seed=3,
        n_evaluations=2,
        n_last_evaluations=1,
        n_eval_episodes=2,
        keep_models=False,
        progress=False,
    )
    trials = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert len(trials) == 6
    old, new = trials[:4], trials[4:]
    assert all("policy_loss" in t.params and "variant" not in t.params for t in old)
    assert all("variant" in t.params and "policy_loss" not in t.params for t in new)
    text = summary(study)
    assert all(f"| {t.number} |" in text for t in trials)
