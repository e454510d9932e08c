"""How a study searches: its samplers, their seeds, the first generation and the space on sparse data.

- **Distinct trials on every worker.** Each worker process claims a study-unique number from the storage
  (:func:`storage.results.claim_worker_number`) and seeds its sampler with :func:`sampler_seed` of the
  study seed and that number, so concurrent workers and resumed runs draw new configurations while a
  study run by one worker at a time stays reproducible from its seed.
- **A first generation that is not plain random** (:func:`initial_design`): trial 0 is gensim's defaults
  (the baseline), then the published settings of :data:`LITERATURE_SETTINGS` that the space can represent,
  then a seeded Latin hypercube over the searched parameters, together :func:`population_size` trials.
  They are queued when the study is created, so every worker takes a different one.
- **Population size follows the budget** (:func:`population_size`): about five NSGA-II generations.
- **Samplers** (:func:`make_sampler`): NSGA-II (default), Optuna's ``GPSampler`` (constrained
  multi-objective; needs PyTorch: ``pip install 'songhpo[gp]'``), multi-objective ``TPESampler``, and
  random search. Every one reads the HardNeg constraint from ``trial.set_constraint``.
- **The data** (:func:`resolve_search_space`): where gensim's ``min_count = 5`` would leave more than
  :data:`SPARSE_PAIR_LOSS` of the validation pairs without a vector, the default preset also searches
  ``min_count`` in :data:`hpo.config.SPARSE_MIN_COUNT`; on large data its ``epochs`` range is shortened.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.trial import TrialState

from hpo.config import DEFAULT_SEARCH_SPACE, SPARSE_MIN_COUNT, Distribution, StudyConfig
from hpo.data.dataset import PreparedDataset
from objectives.word2vec import GENSIM_DEFAULTS
from storage.errors import InputError

__all__ = [
    "LITERATURE_SETTINGS",
    "SPARSE_PAIR_LOSS",
    "ParamsClaim",
    "answerable_pair_share",
    "initial_design",
    "make_sampler",
    "params_claim_key",
    "population_size",
    "resolve_search_space",
    "sampler_seed",
]

#: Published Word2Vec settings for music, tried in the first generation when the space holds them.
#: Caselles-Dupré, Lesaint, Royo-Letelier, "Word2vec applied to recommendation: hyperparameters
#: matter", RecSys 2018 (their best setting on music listening data; the rest stays gensim's default).
LITERATURE_SETTINGS: dict[str, dict[str, int | float]] = {
    "caselles-dupre-2018": {"vector_size": 50, "window": 3, "epochs": 110, "sample": 1e-5, "ns_exponent": -0.5},
}
#: Population size = budget / this (about this many NSGA-II generations), within the bounds below.
GENERATIONS = 5
MIN_POPULATION = 8
MAX_POPULATION = 40
#: Share of validation pairs that may lose a song to gensim's ``min_count = 5`` before the data counts
#: as sparse and ``min_count`` is searched.
SPARSE_PAIR_LOSS = 0.10
#: On large data the default preset's ``epochs`` range shrinks so that its longest trial trains on at most
#: this many plays in all (epochs x training plays); never below :data:`MIN_EPOCHS_HIGH` epochs.
MAX_TRAINED_PLAYS = 240_000_000
MIN_EPOCHS_HIGH = 10
_GENSIM_MIN_COUNT = int(GENSIM_DEFAULTS["min_count"])


def population_size(config: StudyConfig) -> int:
    """The NSGA-II generation size (and first-generation size of every sampler) of ``config``.

    The configured ``sampler.population_size``, or ``round(trials / 5)`` clipped to [8, 40]: a budget
    of 60 trials gives 12 trials per generation, five generations in all.
    """
    if config.sampler.population_size is not None:
        return config.sampler.population_size
    return min(MAX_POPULATION, max(MIN_POPULATION, round(config.trials / GENERATIONS)))


def sampler_seed(study_seed: int, worker: int) -> int:
    """The sampler seed of worker number ``worker`` (0, 1, ...) of a study seeded ``study_seed``.

    Derived with numpy's ``SeedSequence``, so nearby study seeds and worker numbers give unrelated streams.
    """
    return int(np.random.SeedSequence([study_seed, worker]).generate_state(1)[0])


#: Claims a parameter set for one trial of the study: ``True`` for the first claimant only, ever (see
#: :func:`storage.results.claim`). Without one, distinctness is checked against the trials in the storage,
#: which two workers sampling at the same moment can both pass.
ParamsClaim = Callable[[Mapping[str, Any]], bool]


def make_sampler(config: StudyConfig, worker: int = 0, claim: ParamsClaim | None = None) -> optuna.samplers.BaseSampler:
    """The sampler named in ``config`` for worker number ``worker``, always passed explicitly.

    Model-based samplers start modelling after the first generation (:func:`population_size` trials).
    ``claim`` makes their proposals distinct across concurrent workers too (:class:`_DistinctProposals`).
    """
    seed = sampler_seed(config.seed, worker)
    startup = population_size(config)
    name = config.sampler.name
    sampler: optuna.samplers.BaseSampler
    if name == "nsga2":
        sampler = _DistinctNSGAII(population_size=startup, seed=seed)
    elif name == "gp":
        require_gp()
        sampler = _DistinctGP(seed=seed, n_startup_trials=startup)
    elif name == "tpe":
        sampler = _DistinctTPE(seed=seed, multivariate=True, n_startup_trials=startup)
    else:
        return optuna.samplers.RandomSampler(seed=seed)
    sampler._claim_params = claim  # type: ignore[attr-defined]
    return sampler


def params_claim_key(params: Mapping[str, Any]) -> str:
    """The claim key of a parameter set: a digest of its sorted names and exact values."""
    text = json.dumps(sorted((name, repr(value)) for name, value in params.items()))
    return "params:" + hashlib.sha256(text.encode()).hexdigest()[:40]


class _DistinctProposals:
    """Sampler mixin: a proposal that copies an earlier trial's parameters is changed before it runs.

    NSGA-II copies a parent when it skips crossover and mutation (about 3% of children with six
    parameters), two workers may breed the same child from the same parents at the same moment, and a
    model-based sampler may propose its incumbent again; a copy would spend a trial's budget on a known
    result. One parameter of the copy (a continuous one when there is one) is redrawn by the sampler's
    independent sampling, as NSGA-II's own mutation does, until the set is new and claimed
    (:data:`ParamsClaim`) or :data:`_REDRAWS` tries are spent (a small, exhausted space: the copy runs).
    A proposal completed by independent sampling (NSGA-II's mutated parameters) is checked the same way
    when its last parameter is drawn: a mutation back to the parent's value is drawn again.
    """

    _claim_params: ParamsClaim | None = None

    def sample_relative(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        params = super().sample_relative(study, trial, search_space)  # type: ignore[misc]
        if params and set(params) == set(search_space):
            continuous = [name for name, d in search_space.items() if isinstance(d, FloatDistribution)]
            names = continuous or list(params)
            rng = np.random.default_rng([trial.number, 0xD1])
            for _ in range(_REDRAWS):
                if self._new(study, params):
                    break
                redraw = names[int(rng.integers(len(names)))]
                value = super().sample_independent(study, trial, redraw, search_space[redraw])  # type: ignore[misc]
                params = {**params, redraw: value}
        # A proposal short of some parameters (NSGA-II's mutation leaves them to independent sampling) is
        # completed, and checked, by sample_independent.
        self._proposals()[trial.number] = (dict(params), set(search_space))
        return params

    def sample_independent(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        value = super().sample_independent(study, trial, param_name, param_distribution)  # type: ignore[misc]
        relative, space = self._proposals().get(trial.number, ({}, set()))
        if param_name not in space or set({**relative, **trial.params, param_name: value}) != space:
            return value  # not a searched parameter, or others are still to come
        for _ in range(_REDRAWS):
            if self._new(study, {**relative, **trial.params, param_name: value}):
                break
            value = super().sample_independent(study, trial, param_name, param_distribution)  # type: ignore[misc]
        return value

    def _new(self, study: optuna.Study, params: Mapping[str, Any]) -> bool:
        """``params`` is no earlier trial's and is now claimed for this one."""
        return not _taken(study, params) and (self._claim_params is None or self._claim_params(params))

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._proposals().pop(trial.number, None)  # its parameters are all drawn
        super().after_trial(study, trial, state, values)  # type: ignore[misc]

    def _proposals(self) -> dict[int, tuple[dict[str, Any], set[str]]]:
        # Per sampler instance (one per worker process): trial number -> its relative proposal and space.
        if not hasattr(self, "_proposal_of"):
            self._proposal_of: dict[int, tuple[dict[str, Any], set[str]]] = {}
        return self._proposal_of


#: Redraws of one parameter before a copied proposal is let through.
_REDRAWS = 20


def _taken(study: optuna.Study, params: Mapping[str, Any]) -> bool:
    """Whether some trial of ``study`` has (or is queued with) exactly ``params``."""
    for other in study.get_trials(deepcopy=False):
        if other.params == params or other.system_attrs.get("fixed_params") == params:
            return True
    return False


class _DistinctNSGAII(_DistinctProposals, optuna.samplers.NSGAIISampler):
    """NSGA-II with distinct proposals, whose generations count queued trials too.

    Optuna assigns a trial its generation while sampling its parameters; a queued trial whose parameters
    are all fixed is never sampled, so the first generation (:func:`initial_design`) would belong to no
    generation and never be a parent. Assigning it when every trial starts fixes that.
    """

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        super().before_trial(study, trial)
        self.get_trial_generation(study, trial)


# Optuna derives the generation keys from the class name; keep NSGAIISampler's, so a study's generations
# read the same with plain Optuna.
_DistinctNSGAII._GENERATION_KEY = optuna.samplers.NSGAIISampler._get_generation_key()
_DistinctNSGAII._PARENT_CACHE_KEY_PREFIX = optuna.samplers.NSGAIISampler._get_parent_cache_key_prefix()


class _DistinctTPE(_DistinctProposals, optuna.samplers.TPESampler):
    """Multi-objective (multivariate) TPE with distinct proposals."""


class _DistinctGP(_DistinctProposals, optuna.samplers.GPSampler):
    """Optuna's GP sampler (constrained multi-objective) with distinct proposals."""


def require_gp() -> None:
    """Refuse the ``gp`` sampler early, with the fix, when PyTorch is not installed."""
    if importlib.util.find_spec("torch") is None:
        raise InputError("sampler 'gp' needs PyTorch; install it with: pip install 'songhpo[gp]'")


def answerable_pair_share(dataset: PreparedDataset, min_count: int = _GENSIM_MIN_COUNT) -> float:
    """Share of the validation pairs whose query and target both reach ``min_count`` training plays."""
    counts = dataset.train_counts
    pairs = np.concatenate([dataset.pairs("validation", "in"), dataset.pairs("validation", "out")])
    if pairs.shape[0] == 0:
        return 1.0
    kept = (counts[pairs[:, 0]] >= min_count) & (counts[pairs[:, 1]] >= min_count)
    return float(np.mean(kept))


def resolve_search_space(config: StudyConfig, dataset: PreparedDataset) -> StudyConfig:
    """``config`` with the default preset adapted to ``dataset``; the result is what the study stores, so
    every worker searches the same space.

    - sparse data (:func:`answerable_pair_share` below ``1 - SPARSE_PAIR_LOSS``): ``min_count`` is searched
      in :data:`hpo.config.SPARSE_MIN_COUNT`, unless the config searches or fixes it;
    - large data: the preset's ``epochs`` range ends at ``MAX_TRAINED_PLAYS / training plays`` epochs (at
      least :data:`MIN_EPOCHS_HIGH`), so that one trial never trains for days (the Million Playlist
      Dataset's 66M plays: 10 epochs; yes_big and aotm2011 keep 120). A range set in the config is kept.

    The ``paper`` preset is never adapted.
    """
    if config.search_preset != "default":
        return config
    space = dict(config.search_space)
    if "min_count" not in space and answerable_pair_share(dataset) < 1.0 - SPARSE_PAIR_LOSS:
        space["min_count"] = SPARSE_MIN_COUNT
    epochs = space.get("epochs")
    if epochs == DEFAULT_SEARCH_SPACE["epochs"]:
        assert isinstance(epochs, Distribution) and epochs.high is not None
        plays = max(int(dataset.counts.get("train_plays", 0)), 1)
        high = max(MIN_EPOCHS_HIGH, min(int(epochs.high), MAX_TRAINED_PLAYS // plays))
        if high < epochs.high:
            space["epochs"] = epochs.model_copy(update={"high": float(high)})
    return config if space == config.search_space else config.model_copy(update={"search_space": space})


def initial_design(config: StudyConfig) -> list[tuple[str, dict[str, Any]]]:
    """``(label, params)`` of the first generation after the baseline, to be queued at creation.

    The literature settings the space can represent (every one of their parameters searched, with the
    value in range), then a Latin hypercube of the searched parameters (seeded by the study seed) up to
    :func:`population_size` - 1 trials, and never beyond the study's budget. Empty for random search,
    with ``initial_design = false``, or when nothing is searched.
    """
    space = {name: spec for name, spec in config.search_space.items() if isinstance(spec, Distribution)}
    if config.sampler.name == "random" or not config.sampler.initial_design or not space:
        return []
    size = min(population_size(config), config.trials) - 1
    design: list[tuple[str, dict[str, Any]]] = []
    for label, setting in LITERATURE_SETTINGS.items():
        if all(name in space and space[name].contains(value) for name, value in setting.items()):
            design.append((label, {**_defaults(space), **setting}))
    design = design[:size]
    n_points = size - len(design)
    if n_points > 0:
        from scipy.stats import qmc

        names = list(space)
        unit = qmc.LatinHypercube(d=len(names), rng=np.random.default_rng([config.seed, 0x1D])).random(n_points)
        for row in unit:
            design.append(("latin-hypercube", {name: _from_unit(space[name], u) for name, u in zip(names, row)}))
    return design


def _defaults(space: Mapping[str, Distribution]) -> dict[str, Any]:
    return {name: GENSIM_DEFAULTS[name] for name in space}


def _from_unit(spec: Distribution, u: float) -> Any:
    """The value of ``spec`` at quantile ``u`` in [0, 1) of its (log-)uniform measure."""
    if spec.type == "categorical":
        choices = spec.choices or []
        return choices[min(int(u * len(choices)), len(choices) - 1)]
    assert spec.low is not None and spec.high is not None
    if spec.type == "int":
        if spec.log:
            # Each integer gets the log-measure of [v - 0.5, v + 0.5), as Optuna's own int log sampling.
            low, high = math.log(spec.low - 0.5), math.log(spec.high + 0.5)
            value = round(math.exp(low + u * (high - low)))
        else:
            step = int(spec.step or 1)
            value = int(spec.low) + step * int(u * ((int(spec.high) - int(spec.low)) // step + 1))
        return int(min(max(value, spec.low), spec.high))
    if spec.log:
        value = math.exp(math.log(spec.low) + u * (math.log(spec.high) - math.log(spec.low)))
    else:
        value = spec.low + u * (spec.high - spec.low)
        if spec.step is not None:
            value = spec.low + round((value - spec.low) / spec.step) * spec.step
    return float(min(max(value, spec.low), spec.high))
