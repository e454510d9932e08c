"""The ``songhpo`` command line: :mod:`hpo.cli.main` (entry point and top-level parser), one module per
command group, and the argument helpers they share.

Importing it loads no heavy library (numpy, pandas, Optuna, SQLAlchemy, gensim): every command imports
what it needs when it runs, so ``songhpo --help`` stays fast.
"""
