"""Names the command line offers as choices and defaults, in a module that imports nothing heavy.

Building the parser for ``songhpo --help`` reads these; importing them from the modules that use them
(``hpo.data.dataset``, ``hpo.experiment``) would load pandas, SQLAlchemy and Optuna first.
"""

from __future__ import annotations

#: The evaluation splits of a prepared dataset.
SPLITS = ("validation", "test")
#: The search modes of ``songhpo experiment run`` (the paper's comparison).
MODES = ("baseline", "ndcg", "clustering", "random", "nsga2", "nsga2-free")
#: Training fractions of the experiment's scale study.
DEFAULT_SCALES = (0.1, 0.25, 0.5, 1.0)
