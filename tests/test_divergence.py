"""Tests for vit_jax/divergence.py: the rule, the record, and the names the study tools read."""

import json
import math
import os

import pytest

from configs import common
from vit_jax import diagnostics
from vit_jax import divergence
from vit_jax import study_runs


def test_limit_is_k_times_the_initial_loss():
  config = common.get_config()
  assert divergence.limit(config, 100) == math.inf  # default: only a non-finite loss
  config.divergence_factor = 3.0
  assert divergence.limit(config, 100) == pytest.approx(3 * math.log(100))


@pytest.mark.parametrize('losses,step,reason', [
    ([2.0, float('nan')], 12, 'non-finite'),
    ([2.0, 3.0, 14.0], 13, 'above limit'),
])
def test_check_records_the_step_and_stops(tmp_path, losses, step, reason):
  with pytest.raises(divergence.Diverged, match=f'at step {step}: the run diverged'):
    divergence.check([{'loss': x} for x in losses], 11, str(tmp_path), 13.8)
  with open(tmp_path / divergence.FILE) as f:
    record = json.load(f)
  assert record['step'] == step and record['reason'] == reason and record['limit'] == 13.8


def test_check_passes_finite_losses_below_the_limit(tmp_path):
  divergence.check([{'loss': 13.8}, {'loss': 0.1}], 1, str(tmp_path), 13.8)
  assert not os.path.exists(tmp_path / divergence.FILE)
  assert issubclass(divergence.Diverged, FloatingPointError)  # callers of the NaN guard still catch it


def test_the_study_tools_read_the_same_names():
  assert study_runs.DIVERGED_FILE == divergence.FILE
  assert study_runs.DIVERGED_EXIT == divergence.EXIT_CODE
  assert study_runs.DIAGNOSTICS_FILE == diagnostics.FILE
