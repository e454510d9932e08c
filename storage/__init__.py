"""SQL result tables beside the Optuna storage: datasets, studies, trial and popularity-bucket metrics,
Pareto-front snapshots (:mod:`storage.models`), their Alembic-managed schema (:mod:`storage.db`), writers
and queries (:mod:`storage.results`), and the user-error class every layer raises (:mod:`storage.errors`).
Knows nothing about gensim, objectives, Optuna or :mod:`hpo`."""
