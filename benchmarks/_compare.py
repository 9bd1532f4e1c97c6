"""The shape every comparison benchmark reports in, so one runner can print and record them.

A *comparison* measures our way and its baseline in the same run, on the same server and
data, and reports the ratio next to the goal. ``python -m benchmarks`` collects the
comparisons of every module that defines ``comparisons(quick: bool) -> Report``.

Ratios are always "ours over baseline" for costs (time, buffers: lower is better, goal is a
maximum) and "ours over baseline" for throughput too (higher is better, goal is a minimum);
``Goal`` says which.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Goal:
    """``ratio <= limit`` (kind "max") or ``ratio >= limit`` (kind "min"); "keep" rows are
    goals too: the limit is what the issue recorded as already reached."""

    kind: Literal["max", "min"]
    limit: float

    def met(self, ratio: float) -> bool:
        return ratio <= self.limit if self.kind == "max" else ratio >= self.limit

    def __str__(self) -> str:
        return f"{'<=' if self.kind == 'max' else '>='} {self.limit:g}"


@dataclass(frozen=True)
class Comparison:
    """One measured question: ours vs its baseline, both in ``unit``."""

    question: str
    ours: float
    baseline: float
    unit: str
    goal: Goal
    baseline_name: str
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.ours / self.baseline if self.baseline else float("inf")

    @property
    def met(self) -> bool:
        return self.goal.met(self.ratio)


@dataclass
class Report:
    """What one benchmark module returns: its section title, the command that reproduces it
    alone, a free-text description of the data, and its comparisons (plus optional extra
    markdown, e.g. a detail table or the profile that explains a missed goal)."""

    title: str
    command: str
    data: str
    comparisons: list[Comparison] = field(default_factory=list)
    details: str = ""
