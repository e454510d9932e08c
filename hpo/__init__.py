"""songhpo: multi-objective hyper-parameter optimisation of behavioural song embeddings."""

__version__ = "0.1.0"
