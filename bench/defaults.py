"""One source of truth for every default of the harness; the CLI and the Python API both read it."""

from __future__ import annotations

RESULTS_DIR = "results"
BUNDLE = "synthetic-faces"
METHODS = "all"
SEED = 0
DEVICE = "cpu"
BATCH_SIZE = 64
# Default test-set size on the embedded domain. 128 images keep `bench run --methods all` (four
# optimisation methods at their stated iteration budgets plus the semantic analysis) within about ten
# minutes on a 2-core CPU, and are enough to estimate the covariance of the 16-dimensional domain
# Fréchet features (N/K = 8); the real-vs-real floor stored beside every FID shows the estimate's noise.
LIMIT = 128
# The embedded test split's size: its images are rendered on demand, so --limit is bounded by it (a
# --data folder bounds --limit by its own image count).
MAX_LIMIT = 100_000
# How many test images get their input / reconstruction PNGs saved for the report's grids.
GRID_IMAGES = 8
# Sweep values for `bench ablate lambda_dom` when --values is not given (the paper's Fig. 9 range).
ABLATE_VALUES = {"lambda_dom": (0.0, 0.5, 1.0, 2.0, 5.0, 10.0)}
# idinvert's optimisation budget (steps): a longer anytime run's milestone at this step is its
# matched-budget row in Table 1 and the "matched" protocol of the claims.
MATCHED_STEP = 100
# `bench perf`: images inverted each way, and the optimisation steps (the paper's / official setting of
# idinvert); with --variants, image2stylegan's 32 images are one batch of the default run.
PERF_IMAGES = 16
PERF_ITERS = 100
PERF_VARIANT_IMAGES = 32
