"""Names the command line offers as choices and defaults, in a module that imports nothing heavy.

Building the parser for ``songhpo --help`` reads these; importing them from the modules that use them
(``hpo.data.dataset``, ``hpo.experiment``) would load pandas, SQLAlchemy and Optuna first.
"""

from __future__ import annotations

#: The evaluation splits of a prepared dataset.
SPLITS = ("validation", "test")
#: The search modes of ``songhpo experiment run`` (the paper's comparison).
MODES = ("baseline", "literature", "ndcg", "clustering", "random", "nsga2", "nsga2-free")
#: Training fractions of the experiment's scale study.
DEFAULT_SCALES = (0.1, 0.25, 0.5, 1.0)
#: Next-song pairs evaluated per model (in-set and out-of-set together) before a seeded sample of them is
#: evaluated instead (``[evaluation] max_pairs``, ``songhpo eval --max-pairs``), chosen with
#: ``benchmarks/bench_scale.py --sizes 1.0 --caps`` at Spotify MPD size (66M plays, 2.2M songs, gensim's
#: defaults trained in 3,072 s on one thread): with :data:`DEFAULT_COHERENCE_SAMPLE`, 400,000 pairs cost
#: kNN + metrics 10.0% of the training and give NDCG@100 a relative standard error of 1.7% (issue 14's
#: targets: 10% and 2%); 50,000 pairs gave 3.5% and 5.8%, 200,000 pairs 6.6% and 2.7%. Every bundled
#: or shared dataset (synthetic default, yes_big, aotm2011: under 30,000 validation pairs) is evaluated whole.
DEFAULT_MAX_PAIRS = 400_000
#: Songs sampled per local-coherence metric (``[evaluation] coherence_sample``). At MPD size the kNN of
#: 2 x 20,000 coherence songs cost 46 s, 1.5% of the training, on top of the pairs; with 5,000 songs the
#: relative standard error of a coherence is about 1.5%, and every trial of a study scores the same songs.
DEFAULT_COHERENCE_SAMPLE = 5_000
