"""SQL result tables beside the Optuna storage: datasets, studies, trial and popularity-bucket metrics,
Pareto-front snapshots (:mod:`storage.models`), their Alembic-managed schema (:mod:`storage.db`), and
writers and queries (:mod:`storage.results`). Knows nothing about gensim, objectives or Optuna."""
