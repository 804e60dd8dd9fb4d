"""The ragstore command line (installed as the package ``ragstore_cli``)."""

import os

# Before numpy loads: one BLAS thread per batch and one batch per core
# (MiniLM's workers) embeds faster than multi-threaded BLAS, and far faster on a
# busy machine. A value the user set is kept.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
