"""A metric family of the registry (fastgw/observe/metrics.py): a name, a
kind, and every label combination it will ever have, declared from the
config so cardinality is fixed at load.

In a module of its own, importing nothing of fastgw, so that the components
declaring families (observe/policy_metrics.py, say) need not import
metrics.py, which lists their sources: one direction only, no import cycle.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    """A registry family: every label combination it will ever have, up front."""
    name: str
    kind: str                                  # "counter" or "gauge"
    help: str
    labels: tuple[str, ...] = ()
    series: tuple[tuple[str, ...], ...] = ((),)
    scale: float = 1.0                         # rendered value = cell / scale

    def __post_init__(self):
        if self.kind not in ("counter", "gauge"):
            raise ValueError(f"{self.name}: kind must be counter or gauge")
        object.__setattr__(self, "series", tuple(tuple(s) for s in self.series))
        for values in self.series:
            if len(values) != len(self.labels):
                raise ValueError(f"{self.name}: {values!r} does not match labels {self.labels!r}")
