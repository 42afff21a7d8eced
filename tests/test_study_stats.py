"""The statistics over seeds against hand computation: t-intervals, paired t-tests, Holm."""

import math

import numpy as np
import pytest

from vit_jax import study_stats

T_975_DF2 = 4.302652729749464   # Student t quantile 0.975, 2 degrees of freedom (tables)
T_975_DF1 = 12.706204736174698  # ... 1 degree of freedom


def test_summary_matches_hand_computation():
  s = study_stats.summarize([0.30, 0.32, 0.34])
  assert s.n == 3
  assert s.mean == pytest.approx(0.32)
  assert s.std == pytest.approx(0.02)  # sqrt((0.02² + 0 + 0.02²) / 2)
  half = T_975_DF2 * 0.02 / math.sqrt(3)
  assert (s.ci_low, s.ci_high) == pytest.approx((0.32 - half, 0.32 + half))
  two = study_stats.summarize([0.1, 0.3])
  assert two.std == pytest.approx(math.sqrt(0.02))
  assert two.half_width == pytest.approx(T_975_DF1 * math.sqrt(0.02) / math.sqrt(2))


def test_one_seed_has_no_spread_and_nan_is_skipped():
  s = study_stats.summarize([0.5, float('nan')])
  assert s.n == 1 and s.mean == 0.5
  assert math.isnan(s.std) and math.isnan(s.ci_low)
  assert study_stats.summarize([]).n == 0


def test_paired_t_test_matches_hand_computation():
  from scipy import stats
  a = {0: 0.30, 1: 0.32, 2: 0.34, 7: 0.9}  # seed 7 has no partner: ignored
  b = {0: 0.28, 1: 0.31, 2: 0.30}
  d = np.array([0.02, 0.01, 0.04])
  sd = math.sqrt(sum((x - d.mean()) ** 2 for x in d) / 2)
  t = d.mean() / (sd / math.sqrt(3))
  p = 2 * stats.t.sf(abs(t), 2)
  result = study_stats.paired_t_test(a, b)
  assert result.n == 3
  assert result.mean_diff == pytest.approx(d.mean())
  assert result.t == pytest.approx(t) and result.t == pytest.approx(2.6457513, rel=1e-6)
  assert result.p == pytest.approx(p)
  half = T_975_DF2 * sd / math.sqrt(3)
  assert (result.ci_low, result.ci_high) == pytest.approx((d.mean() - half, d.mean() + half))


def test_paired_t_test_undefined_cases():
  assert math.isnan(study_stats.paired_t_test({0: 0.5}, {0: 0.4}).p)          # one pair
  assert math.isnan(study_stats.paired_t_test({0: 0.5, 1: 0.6}, {0: 0.4, 1: 0.5}).p)  # equal diffs
  # equal up to float rounding (the study's pre and post seeds 0 and 1: -95 images of 5,000 each
  # time), which scipy would call p = 1e-14
  assert math.isnan(study_stats.paired_t_test({0: 0.3108, 1: 0.3092}, {0: 0.3298, 1: 0.3282}).p)


def test_holm_adjustment():
  assert study_stats.holm_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
  adjusted = study_stats.holm_adjust([0.2, float('nan'), 0.01])
  assert adjusted[0] == pytest.approx(0.2) and adjusted[2] == pytest.approx(0.02)
  assert math.isnan(adjusted[1])
  assert study_stats.holm_adjust([0.9, 0.8]) == pytest.approx([1.0, 1.0])  # 2 x 0.8 capped at 1


def test_seeds_to_pass_is_the_first_n_whose_t_clears_the_critical_value():
  # mean 1, sd 1: t = sqrt(n); t_{0.975}(5) = 2.571 > sqrt(6) = 2.449, t_{0.975}(6) = 2.447 < sqrt(7)
  assert study_stats.seeds_to_pass(1.0, 1.0, alpha=0.05) == 7
  assert study_stats.seeds_to_pass(-1.0, 1.0, alpha=0.05) == 7          # two-sided
  # Holm's first step over 12 tests: t_{1-0.05/24}(11) = 3.600 > sqrt(12), (12) = 3.527 < sqrt(13)
  assert study_stats.seeds_to_pass(1.0, 1.0, alpha=0.05 / 12) == 13
  assert study_stats.seeds_to_pass(0.01, 1.0, alpha=0.05) is None       # beyond MAX_SEEDS_PLANNED
  assert study_stats.seeds_to_pass(1.0, 0.0, alpha=0.05) is None        # no spread: no test
  assert study_stats.seeds_to_pass(0.0, 1.0, alpha=0.05) is None
