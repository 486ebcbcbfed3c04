"""A run whose CPU frequency changed (or that throttled) while measuring is flagged noisy."""
from __future__ import annotations

from harness.devices.state import run_flags

STATE = {"governor": "ondemand", "freq_mhz": [600.0] * 4, "freq_source": "cpufreq", "freq_fixed": True,
         "temp_c": 50.0, "throttled": "0x0", "load_1m": 0.1, "load_5m": 0.1}


def test_frequency_change_during_the_run_is_noisy():
    flags = run_flags(STATE, {**STATE, "freq_mhz": [1200.0] * 4}, cores=4)
    assert flags["noisy"] is True
    assert any("frequency changed during the run (600 -> 1200 MHz)" in w for w in flags["warnings"])


def test_throttling_during_the_run_is_noisy():
    assert run_flags(STATE, {**STATE, "throttled": "0x50005"}, cores=4)["noisy"] is True


def test_steady_state_is_not_noisy():
    flags = run_flags(STATE, {**STATE, "freq_mhz": [601.0] * 4, "temp_c": 55.0}, cores=4)
    assert flags == {"noisy": False, "warnings": []}
