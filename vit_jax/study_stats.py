"""Statistics over seeds: mean ± std with a t-interval, the paired t-test, Holm's correction.

Why separate: these are the numbers the study's conclusions rest on, checked against hand
computation (tests/test_study_stats.py) apart from how runs are read (`vit_jax.study_runs`) or
reported (`vit_jax.report`). Each function takes plain numbers; none reads files.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

CONFIDENCE = 0.95          # of the intervals over seeds
# Paired differences that agree within this are identical (float rounding of accuracies such as
# 0.3108 - 0.3298 and 0.3092 - 0.3282): no spread, so no t-test.
IDENTICAL_DIFFERENCES = 1e-9
MAX_SEEDS_PLANNED = 100    # seeds_to_pass looks no further


@dataclasses.dataclass(frozen=True)
class Summary:
  """Mean, sample standard deviation (ddof=1) and a t-interval for the mean over n values."""
  n: int
  mean: float
  std: float       # nan when n < 2
  ci_low: float    # nan when n < 2
  ci_high: float

  @property
  def half_width(self) -> float:
    return (self.ci_high - self.ci_low) / 2


def summarize(values: Sequence[float], confidence: float = CONFIDENCE) -> Summary:
  """Mean ± t_{n-1} * s / sqrt(n): the interval for the mean over seeds (normal errors)."""
  x = np.asarray([v for v in values if v is not None and not math.isnan(v)], np.float64)
  n = len(x)
  if n == 0:
    return Summary(0, math.nan, math.nan, math.nan, math.nan)
  mean = float(np.mean(x))
  if n < 2:
    return Summary(1, mean, math.nan, math.nan, math.nan)
  std = float(np.std(x, ddof=1))
  half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
  return Summary(n, mean, std, mean - half, mean + half)


@dataclasses.dataclass(frozen=True)
class PairedTest:
  """Two-sided paired t-test of a - b over the seeds both conditions have."""
  n: int
  mean_diff: float
  ci_low: float    # t-interval of the mean difference; nan when n < 2
  ci_high: float
  t: float         # nan when n < 2 or every difference is identical
  p: float


def paired_t_test(a: Mapping[Any, float], b: Mapping[Any, float],
                  confidence: float = CONFIDENCE) -> PairedTest:
  """Pairs a[seed] with b[seed]: with the same seed both runs see the same data order and the
  same initialisation key, so the pairing removes that shared part of the noise."""
  seeds = sorted(set(a) & set(b))
  d = np.asarray([a[s] - b[s] for s in seeds], np.float64)
  diff = summarize(d, confidence)
  if diff.n < 2 or np.ptp(d) <= IDENTICAL_DIFFERENCES:
    return PairedTest(diff.n, diff.mean, diff.ci_low, diff.ci_high, math.nan, math.nan)
  result = stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds])
  return PairedTest(diff.n, diff.mean, diff.ci_low, diff.ci_high, float(result.statistic),
                    float(result.pvalue))


def holm_adjust(pvalues: Sequence[float]) -> list[float]:
  """Holm-Bonferroni adjusted p-values (nan stays nan and does not count as a test)."""
  p = np.asarray(pvalues, np.float64)
  valid = np.flatnonzero(~np.isnan(p))
  adjusted = np.full(len(p), np.nan)
  m = len(valid)
  running = 0.0
  for rank, i in enumerate(valid[np.argsort(p[valid], kind='stable')]):
    running = max(running, min(1.0, (m - rank) * p[i]))
    adjusted[i] = running
  return adjusted.tolist()


def seeds_to_pass(mean_diff: float, std_diff: float, alpha: float,
                  max_seeds: int = MAX_SEEDS_PLANNED) -> int | None:
  """The fewest seeds at which a paired t-test of this mean difference and this spread of
  differences would give p < alpha; None beyond max_seeds (or no spread, or no difference).

  A planning figure for a comparison that leans one way but does not pass: it assumes the
  observed difference and spread are the true ones, which with few seeds they are not.
  """
  if not std_diff > 0 or not abs(mean_diff) > 0:
    return None
  for n in range(2, max_seeds + 1):
    if abs(mean_diff) / (std_diff / math.sqrt(n)) > stats.t.ppf(1 - alpha / 2, n - 1):
      return n
  return None
