"""The study configuration: a TOML file validated with pydantic, with clear one-line errors.

``songhpo study init`` writes a commented example (:data:`EXAMPLE_CONFIG`). Relative paths in the file
resolve against the file's directory. Search-space entries merge over the paper's five defaults; a
scalar instead of a table fixes that parameter.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hpo.choices import DEFAULT_COHERENCE_SAMPLE, DEFAULT_MAX_PAIRS
from objectives.word2vec import GENSIM_DEFAULTS, TUNABLE_PARAMETERS
from storage.errors import InputError

#: Metrics that can be objectives, with their direction.
METRIC_DIRECTIONS: dict[str, str] = {
    **dict.fromkeys(
        ["ndcg", "ndcg_in", "ndcg_out", "hitrate", "hitrate_in", "hitrate_out", "coherence_genre",
         "coherence_artist", "ch_genre", "ch_artist"],
        "maximize",
    ),
    "hardneg": "minimize",
}
DEFAULT_OBJECTIVES = ("ndcg", "ch_artist", "ch_genre")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Distribution(_Strict):
    """One searched parameter: ``int``/``float`` in [low, high] (optionally log/step), or ``categorical``."""

    type: Literal["int", "float", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[int | float | str] | None = None

    @model_validator(mode="after")
    def _check(self) -> Distribution:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty 'choices' list")
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"an {self.type} parameter needs 'low' and 'high'")
        if self.low > self.high:
            raise ValueError(f"low {self.low} is above high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError("a log-scaled parameter needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("'log' and 'step' cannot be combined")
        if self.type == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError("an int parameter needs integer low and high")
        return self

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is a possible sample of this distribution."""
        if self.type == "categorical":
            return value in (self.choices or [])
        assert self.low is not None and self.high is not None
        if not self.low <= value <= self.high:
            return False
        return self.step is None or abs((value - self.low) / self.step - round((value - self.low) / self.step)) < 1e-9


#: The paper's five parameters and ranges (Quadrana et al. 2022): ``search_preset = "paper"``.
PAPER_SEARCH_SPACE: dict[str, Distribution] = {
    "vector_size": Distribution(type="int", low=16, high=256, log=True),
    "window": Distribution(type="int", low=1, high=20),
    "ns_exponent": Distribution(type="float", low=-1.0, high=1.0),
    "negative": Distribution(type="int", low=1, high=30),
    "alpha": Distribution(type="float", low=1e-4, high=1e-1, log=True),
}

#: songhpo's default space (``search_preset = "default"``), chosen by measurement on yes_big, aotm2011 and
#: the synthetic default (README, "The default search space"; ``benchmarks/bench_space.py``): ``epochs``
#: and ``sample`` are searched, and ``alpha``'s floor is coupled to ``epochs``'s: every draw moves the
#: vectors at least ``alpha x epochs = 0.05`` (gensim's defaults: 0.125), below which they stay untrained.
DEFAULT_SEARCH_SPACE: dict[str, Distribution] = {
    "vector_size": Distribution(type="int", low=16, high=256, log=True),
    "window": Distribution(type="int", low=1, high=10),
    "ns_exponent": Distribution(type="float", low=-1.0, high=1.0),
    "negative": Distribution(type="int", low=1, high=20),
    "alpha": Distribution(type="float", low=1e-2, high=1e-1, log=True),
    "epochs": Distribution(type="int", low=5, high=120, log=True),
    "sample": Distribution(type="float", low=1e-5, high=1e-2, log=True),
}

#: Added to the default space on sparse data (:func:`hpo.search.sparse_data`), where gensim's
#: ``min_count = 5`` leaves many evaluation songs without a vector.
SPARSE_MIN_COUNT = Distribution(type="int", low=1, high=5)

SEARCH_PRESETS: dict[str, dict[str, Distribution]] = {"default": DEFAULT_SEARCH_SPACE, "paper": PAPER_SEARCH_SPACE}


class SamplerConfig(_Strict):
    name: Literal["nsga2", "gp", "tpe", "random"] = "nsga2"
    #: NSGA-II generation size and first-generation size of every sampler; ``None``: from the trial
    #: budget (:func:`hpo.search.population_size`).
    population_size: Annotated[int, Field(ge=2)] | None = None
    #: First generation = gensim's defaults, the literature setting and a Latin hypercube (not random).
    #: Random search ignores it (it stays the paper's plain random search).
    initial_design: bool = True


class EvaluationConfig(_Strict):
    k: Annotated[int, Field(ge=1)] = 100
    coherence_k: Annotated[int, Field(ge=1)] | None = None
    coherence_sample: Annotated[int, Field(ge=1)] = DEFAULT_COHERENCE_SAMPLE
    ch_sample: Annotated[int, Field(ge=2)] = 50_000
    n_buckets: Annotated[int, Field(ge=1)] = 10
    #: Cap on the next-song pairs (in-set and out-of-set together) a trial evaluates: above it, a seeded
    #: sample of this many pairs, the same for every trial of the study, with standard errors
    #: (:func:`metrics.sampling.evaluation_sample`). At least 2, so that each side keeps a pair.
    max_pairs: Annotated[int, Field(ge=2, strict=True)] = DEFAULT_MAX_PAIRS


class ConstraintConfig(_Strict):
    """The HardNeg safeguard (see :class:`objectives.trial.Safeguard` for the rules)."""

    enabled: bool = True
    tolerance: Annotated[float, Field(ge=0.0)] = 0.10
    #: ``paired-test``: infeasible only when a one-sided paired test over the supporting songs says so;
    #: ``point``: the plain comparison of the two HardNeg values (the paper's rule).
    rule: Literal["paired-test", "point"] = "paired-test"
    confidence: Annotated[float, Field(ge=0.5, lt=1.0)] = 0.95


class TrainingConfig(_Strict):
    # One worker thread makes gensim deterministic; more is faster but not reproducible.
    workers: Annotated[int, Field(ge=1)] = 1
    # Share of the training sequences Word2Vec sees (a seeded subset, the same for every trial of the
    # study and its test re-training); evaluation pairs stay those of the whole prepared dataset.
    fraction: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0


class ArtifactsConfig(_Strict):
    """Where and which trial embeddings are kept as Optuna artifacts (:mod:`hpo.artifacts`).

    ``policy``: ``front`` keeps the vectors of the baseline and of the trials on the feasible Pareto front
    (a trial is uploaded when it completes undominated; a trial that later leaves the front loses them),
    ``all`` keeps every completed trial's, ``none`` keeps nothing. ``store``: a directory (shared by every
    worker of a distributed study); default ``<db stem>-artifacts/`` next to a SQLite file, and none for a
    server storage (PostgreSQL, MySQL), whose workers need a shared directory to agree on.
    """

    policy: Literal["front", "all", "none"] = "front"
    store: Path | None = None


class HeartbeatConfig(_Strict):
    interval: Annotated[int, Field(ge=1)] = 10
    grace_period: Annotated[int, Field(ge=2)] = 30
    max_retry: Annotated[int, Field(ge=0)] = 3


#: Valid fixed values of gensim parameters: (smallest value, whether it must be an integer).
_FIXED_BOUNDS: dict[str, tuple[float | None, bool]] = {
    "vector_size": (1, True), "window": (1, True), "negative": (0, True), "epochs": (1, True), "min_count": (1, True),
    "alpha": (1e-12, False), "min_alpha": (0.0, False), "sample": (0.0, False), "ns_exponent": (None, False),
}


def _check_entry(name: str, spec: Any) -> None:
    if not isinstance(spec, Distribution):
        _check_fixed(name, spec)
    elif not spec.contains(GENSIM_DEFAULTS[name]):
        # Trial 0 (the baseline) trains with gensim's default; Optuna needs it inside the range.
        raise ValueError(
            f"{name}: the range excludes gensim's default {GENSIM_DEFAULTS[name]}, which the baseline "
            "trial uses; widen the range or fix the parameter to a value"
        )


def _check_fixed(name: str, value: Any) -> None:
    """A fixed parameter must be a value gensim accepts, not a trial-time failure of every trial."""
    low, integer = _FIXED_BOUNDS.get(name, (None, False))
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and value != int(value)):
        raise ValueError(f"{name}: fixed value {value!r} must be {'an integer' if integer else 'a number'}")
    if low is not None and value < low:
        raise ValueError(f"{name}: fixed value {value!r} is below {low:g}, which gensim requires")


class StudyConfig(_Strict):
    """A whole study; see :data:`EXAMPLE_CONFIG` for the commented TOML form."""

    name: Annotated[str, Field(min_length=1, max_length=200)]
    dataset: Path
    storage: str = "sqlite:///songhpo.db"
    seed: Annotated[int, Field(ge=0)] = 0
    trials: Annotated[int, Field(ge=1)] = 50
    timeout: Annotated[float, Field(gt=0)] | None = None
    objectives: list[str] = Field(default_factory=lambda: list(DEFAULT_OBJECTIVES))
    #: ``default`` (songhpo's measured space) or ``paper`` (the paper's five); ``search_space`` merges over it.
    search_preset: Literal["default", "paper"] = "default"
    sampler: SamplerConfig = SamplerConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    constraint: ConstraintConfig = ConstraintConfig()
    training: TrainingConfig = TrainingConfig()
    heartbeat: HeartbeatConfig = HeartbeatConfig()
    artifacts: ArtifactsConfig = ArtifactsConfig()
    # validate_default: a config without [search_space] must search the preset, not nothing.
    search_space: dict[str, Distribution | int | float] = Field(default_factory=dict, validate_default=True)

    @field_validator("objectives")
    @classmethod
    def _check_objectives(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one objective is needed")
        unknown = [m for m in value if m not in METRIC_DIRECTIONS]
        if unknown:
            raise ValueError(f"unknown metric {unknown[0]!r}; expected some of {', '.join(METRIC_DIRECTIONS)}")
        if len(set(value)) != len(value):
            raise ValueError("an objective is listed twice")
        return value

    @field_validator("search_space")
    @classmethod
    def _check_search_space(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = [name for name in value if name not in TUNABLE_PARAMETERS]
        if unknown:
            raise ValueError(
                f"unknown parameter {unknown[0]!r}; expected some of {', '.join(TUNABLE_PARAMETERS)}"
            )
        for name, spec in value.items():
            _check_entry(name, spec)
        return value

    @model_validator(mode="before")
    @classmethod
    def _merge_preset(cls, data: Any) -> Any:
        # The file's entries merge over the preset's ranges; an unknown preset is left to field validation.
        if isinstance(data, dict):
            preset = SEARCH_PRESETS.get(data.get("search_preset", "default"), {})
            entries = data.get("search_space") or {}
            if isinstance(entries, dict):
                data = {**data, "search_space": {**preset, **entries}}
        return data

    @property
    def directions(self) -> list[str]:
        return [METRIC_DIRECTIONS[m] for m in self.objectives]

    def resolved(self, base: Path) -> StudyConfig:
        """This config with ``dataset``, ``artifacts.store`` (and a relative SQLite path) made absolute
        against ``base``."""
        dataset = self.dataset if self.dataset.is_absolute() else (base / self.dataset).resolve()
        storage = self.storage
        prefix = "sqlite:///"
        if storage.startswith(prefix) and not storage.startswith(prefix + "/") and storage != prefix + ":memory:":
            storage = prefix + str((base / storage[len(prefix) :]).resolve())
        artifacts = self.artifacts
        if artifacts.store is not None and not artifacts.store.is_absolute():
            artifacts = artifacts.model_copy(update={"store": (base / artifacts.store).resolve()})
        return self.model_copy(update={"dataset": dataset, "storage": storage, "artifacts": artifacts})

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def parse_config(data: dict[str, Any], source: str) -> StudyConfig:
    """Validate ``data``; errors become one-line :class:`InputError` naming ``source`` and the field."""
    try:
        return StudyConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"] if not str(p).startswith(("function-", "union[")))
        more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        message = first["msg"].removeprefix("Value error, ")
        raise InputError(f"{source}: field {field or '(top level)'!r}: {message}{more}") from exc


def load_config(path: str | Path) -> StudyConfig:
    """Read and validate a study TOML file; relative paths resolve against its directory."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such study config; create one with 'songhpo study init --out {path}'")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not valid UTF-8 ({exc.reason})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: invalid TOML ({exc})") from exc
    return parse_config(data, str(path)).resolved(path.resolve().parent)


def _toml_entry(name: str, spec: Distribution) -> str:
    if spec.type == "float":
        bounds = f"low = {spec.low:g}, high = {spec.high:g}"
    else:
        bounds = f"low = {spec.low:.0f}, high = {spec.high:.0f}"
    return f'# {name} = {{ type = "{spec.type}", {bounds}{", log = true" if spec.log else ""} }}'


EXAMPLE_CONFIG = '''\
# songhpo study configuration (TOML). Relative paths resolve against this file's directory.

name = "my-study"                     # study name in the storage
dataset = "prepared"                  # a directory written by 'songhpo data prepare'
storage = "sqlite:///songhpo.db"      # any SQLAlchemy URL; postgresql://user@host/db for many workers
seed = 0                              # sampler seed; trial n trains Word2Vec with seed + n (the baseline: seed)
trials = 60                           # completed trials the study aims for (all workers together)
# timeout = 3600                      # seconds per worker

# Metrics to optimise (maximised, except hardneg which is minimised). Any of: ndcg, ndcg_in, ndcg_out,
# hitrate, hitrate_in, hitrate_out, coherence_genre, coherence_artist, ch_genre, ch_artist, hardneg.
# One metric = single-objective study (use sampler "tpe" or "random" for the paper's comparisons).
objectives = ["ndcg", "ch_artist", "ch_genre"]

# "default": songhpo's measured space (below); "paper": the paper's five parameters and ranges.
search_preset = "default"

[sampler]
name = "nsga2"                        # nsga2 | gp (needs: pip install 'songhpo[gp]') | tpe | random
# population_size = 12                # NSGA-II generation size; default round(trials / 5) within [8, 40]
initial_design = true                 # first generation: gensim defaults, Caselles-Dupre 2018, Latin hypercube

[constraint]
enabled = true                        # HardNeg safeguard against the baseline (gensim defaults)
tolerance = 0.10                      # allowed relative increase of HardNeg@K
rule = "paired-test"                  # paired-test: one-sided test over the supporting songs; point: plain comparison
confidence = 0.95                     # of the paired test

[evaluation]
k = 100                               # neighbours for HitRate / NDCG / HardNeg
# coherence_k = 100                   # neighbours for local coherence (default: k)
coherence_sample = @COHERENCE@# songs sampled for local coherence
ch_sample = 50000                     # songs sampled for Calinski-Harabasz
n_buckets = 10                        # popularity buckets
max_pairs = @MAX_PAIRS@# next-song pairs evaluated; above it a seeded sample, with standard errors

[training]
workers = 1                           # gensim threads; 1 is reproducible, more is faster
fraction = 1.0                        # share of training sequences used (scale studies); eval pairs unchanged

[artifacts]
policy = "front"                      # trial embeddings kept as Optuna artifacts: front | all | none
# store = "songhpo-artifacts"         # directory (shared by all workers); default <db stem>-artifacts/ next to
                                      # a SQLite file; a server storage (PostgreSQL, MySQL) needs one set here

[heartbeat]
interval = 10                         # seconds between a running trial's heartbeats
grace_period = 30                     # a trial silent this long is failed and re-run
max_retry = 3

# Entries here override the preset: a table replaces a range, a plain value fixes a parameter (say
# min_count = 1 to give every song a vector). The default preset searches (on sparse data also min_count 1-5):
[search_space]
'''.replace("@MAX_PAIRS@", f"{DEFAULT_MAX_PAIRS:<26}").replace(
    "@COHERENCE@", f"{DEFAULT_COHERENCE_SAMPLE:<19}") + "\n".join(
    _toml_entry(name, spec) for name, spec in DEFAULT_SEARCH_SPACE.items()) + "\n"
