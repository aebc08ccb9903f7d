"""The one exception a metric raises when it cannot be computed honestly here."""
from __future__ import annotations


class MetricUnavailable(RuntimeError):
    """A metric cannot be computed in this environment (typically: missing pretrained weights).

    ``reason`` is written for a person: it names the missing file and where it goes. The runner
    stores it beside the metric name instead of a number; nothing falls back to random weights.
    """

    def __init__(self, metric: str, reason: str):
        super().__init__(f"{metric} unavailable: {reason}")
        self.metric = metric
        self.reason = reason
