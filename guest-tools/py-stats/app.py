"""Descriptive statistics as an mcpplus tool, written in Python.

Built with componentize-py (see scripts/build-guest-tools.sh); the WIT in wit/
declares the exports, and the class below implements them.
"""

import math
import statistics

import wit_world
from componentize_py_types import Err


class WitWorld(wit_world.WitWorld):
    def describe_sample(self, values: list[float]) -> wit_world.Summary:
        if not values:
            raise Err("the sample is empty; pass at least one value")
        if any(math.isnan(v) for v in values):
            raise Err("the sample contains NaN")
        return wit_world.Summary(
            count=len(values),
            mean=statistics.fmean(values),
            median=statistics.median(values),
            stdev=statistics.stdev(values) if len(values) > 1 else 0.0,
            min=min(values),
            max=max(values),
        )

    def percentile(self, values: list[float], percent: float) -> float:
        if not values:
            raise Err("the sample is empty; pass at least one value")
        if not 0.0 <= percent <= 100.0:
            raise Err(f"percent must be between 0 and 100, got {percent}")
        ordered = sorted(values)
        rank = percent / 100.0 * (len(ordered) - 1)
        low = math.floor(rank)
        high = math.ceil(rank)
        return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
