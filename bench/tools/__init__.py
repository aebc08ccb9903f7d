"""Measurement and diagnosis commands beside the benchmark proper: ``bench perf`` (throughput, GFLOP/s,
``--variants``), ``loop_speed`` and ``anytime_overhead`` (the optimisation loop's cost), ``bench diffuse``
(semantic diffusion, paper Fig. 8) and ``bench doctor`` (which weights are present). The core (cli,
runner, store, evaluation), the metrics and the report never import them; ``workload`` holds what the
timing commands share (the method under test and its images)."""
