"""Datasets and embedding files: reading raw inputs (:mod:`hpo.data.readers`), synthesising them
(:mod:`hpo.data.synth`), preparing the splits (:mod:`hpo.data.prepare`), loading a prepared dataset
(:mod:`hpo.data.dataset`) and reading or writing embedding files (:mod:`hpo.data.embeddings_io`)."""
