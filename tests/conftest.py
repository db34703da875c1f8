"""Shared test settings: one torch thread keeps the suite predictable on 2-core machines."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
