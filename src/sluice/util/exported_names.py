"""Which names Sluice's own metrics are exported under: upstream's current `llm_d_epp_*`, the
GIE v1.3 names (`inference_objective_*`, `inference_pool_*`, `inference_extension_*`, which
llm-d-router still emits beside them as deprecated twins), or both (the default, as upstream)."""

from __future__ import annotations

from dataclasses import dataclass

CHOICES = ("both", "llm-d", "gie")


@dataclass(frozen=True, slots=True)
class ExportedNames:
    llm_d: bool = True
    gie: bool = True

    @classmethod
    def parse(cls, choice: str) -> ExportedNames:
        """From the `--metric-names` value; ValueError names the accepted ones."""
        if choice not in CHOICES:
            raise ValueError(f"--metric-names must be one of {', '.join(CHOICES)}, not {choice!r}")
        return cls(llm_d=choice != "gie", gie=choice != "llm-d")


BOTH = ExportedNames()
