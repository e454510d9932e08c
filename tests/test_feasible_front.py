"""The HardNeg feasibility rule exactly at its boundary: a constraint value of exactly 0 is feasible.

The baseline's own constraint is exactly 0 (HardNeg - (1 + tol) x HardNeg is not computed for it: it is the
reference), so a ``v < 0`` instead of ``v <= 0`` anywhere would silently drop the baseline from every front,
table and chart. Checked on hand-built trials around 0 and on a real study's baseline, through the CLI.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
from optuna.trial import create_trial

from dashboards.pareto import BASELINE, FEASIBLE, FRONT, INFEASIBLE, pareto_figure
from dashboards.selection import feasible_trials, is_feasible
from hpo.study import study_status
from hpo.trials import feasible_pareto_front
from tests.conftest import run_cli, run_tiny_study

#: (values, constraint) of hand-built trials; both objectives maximised.
TRIALS = [
    ((1.0, 1.0), 0.0),                   # 0: exactly on the boundary (like the baseline): feasible, on the front
    ((2.0, 0.5), -0.2),                  # 1: feasible, on the front
    ((3.0, 3.0), math.ulp(0.0)),         # 2: the smallest positive violation: infeasible although it dominates all
    ((0.5, 2.0), -0.0),                  # 3: negative zero is zero: feasible, on the front
    ((0.9, 0.9), -1.0),                  # 4: feasible but dominated by trial 0
]


def _hand_built() -> optuna.Study:
    study = optuna.create_study(directions=["maximize", "maximize"])
    for number, (values, constraint) in enumerate(TRIALS):
        study.add_trial(create_trial(values=list(values), constraints={"hardneg": constraint},
                                     user_attrs={"baseline": number == 0}))
    return study


def test_a_constraint_of_exactly_zero_is_feasible_everywhere() -> None:
    study = _hand_built()
    trials = study.get_trials()
    assert [is_feasible(t) for t in trials] == [True, True, False, True, True]
    assert [t.number for t in feasible_pareto_front(study)] == [0, 1, 3]
    assert [t.number for t in feasible_trials(study)] == [0, 1, 3, 4]
    drawn = {trace.name: list(trace.customdata) for trace in pareto_figure(study, feasible_pareto_front(study)).data}
    assert drawn == {FRONT: [0, 1, 3], FEASIBLE: [4], INFEASIBLE: [2], BASELINE: [0]}
    # Optuna's own rule agrees: best_trials of a constrained study is the feasible front.
    assert sorted(t.number for t in study.best_trials) == [0, 1, 3]


def test_the_baseline_of_a_real_study_has_constraint_zero_and_stays_on_the_front(prepared_synth: Path,
                                                                               tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'b.db'}"
    study, _ = run_tiny_study(prepared_synth, storage, trials=1)  # the budget of 1 is the baseline alone
    (baseline,) = study.get_trials()
    assert baseline.user_attrs["baseline"] and baseline.user_attrs["hardneg"] > 0
    assert baseline.constraints == {"hardneg": 0.0} and baseline.user_attrs["constraint_hardneg"] == 0.0
    assert baseline.user_attrs["feasible"] is True
    assert [t.number for t in feasible_pareto_front(study)] == [0]
    assert study_status(study)["pareto_front_size"] == 1 and study_status(study)["infeasible"] == 0
    shown = run_cli("study", "pareto", "tiny", "--storage", storage, "--json")
    assert shown.returncode == 0, shown.stderr
    assert [(row["trial"], row["baseline"], row["feasible"]) for row in json.loads(shown.stdout)] == [(0, True, True)]
