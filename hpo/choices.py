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
#: Next-song pairs evaluated per model (in-set and out-of-set together) before a seeded sample of them is
#: evaluated instead (``[evaluation] max_pairs``, ``songhpo eval --max-pairs``). Provisional, measured on
#: yes_big: a sample of 50,000 pairs from a large split gives NDCG@100 a relative standard error of 1.2-1.3%
#: (2% needs about 20,000); every bundled or shared dataset (synthetic default, yes_big, aotm2011: under
#: 30,000 validation pairs) is evaluated whole.
DEFAULT_MAX_PAIRS = 50_000
