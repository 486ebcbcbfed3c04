"""CPU detection, and what depends on it, on each machine kind this project runs on.

Sessions and CI get a different CPU each time (Zen 3 with AVX2, Zen 5 with AVX-512, Xeon
Emerald Rapids with AVX512-FP16). These tests run the detection and a real `harness run`
under a fake /proc/cpuinfo of each kind (tests/cpuinfo/, HARNESS_FAKE_CPUINFO), so they are
shown to hold on all three whichever one this is.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.devices import load_devices
from harness.devices.peak_basis import pct_peak_gflops
from harness.devices.peaks import FAKE_CPUINFO_ENV, detect_host
from tests.conftest import REPO, assert_derived_numbers_agree, run_cli

FAKES = REPO / "tests" / "cpuinfo"


@dataclass(frozen=True)
class Kind:
    name: str
    model: str
    ghz: float
    flops_per_cycle: tuple[int, int]
    fp16_math: bool
    int8_ops_per_cycle: int  # VNNI: 2 x 64 MACs per cycle; AVX2 without it: 32 MACs


KINDS = [
    Kind("zen3", "AMD EPYC", 2.445404, (32, 32), False, 64),
    Kind("zen5", "AMD EPYC", 2.596124, (64, 64), False, 256),
    Kind("emeraldrapids", "INTEL(R) XEON(R) PLATINUM 8581C CPU @ 2.30GHz", 2.3, (64, 128), True, 256),
]


def fake(kind: Kind) -> Path:
    return FAKES / f"{kind.name}.txt"


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_detection_and_peaks_per_machine_kind(kind, monkeypatch):
    monkeypatch.setenv(FAKE_CPUINFO_ENV, str(fake(kind)))
    host = detect_host()
    assert host.cpu_model == kind.model
    assert host.freq_ghz == pytest.approx(kind.ghz)
    assert host.flops_per_cycle == kind.flops_per_cycle
    assert host.int8_ops_per_cycle == kind.int8_ops_per_cycle
    assert host.fp16_arithmetic == kind.fp16_math
    assert ("avx512f" in host.isa) == (kind.name != "zen3")
    local = load_devices(REPO / "devices.yaml").get("local")
    fp32, fp16 = kind.flops_per_cycle
    assert local.peak_gflops == {"fp32": pytest.approx(local.cores * kind.ghz * fp32),
                                 "fp16": pytest.approx(local.cores * kind.ghz * fp16),
                                 "int8": pytest.approx(local.cores * kind.ghz * kind.int8_ops_per_cycle)}
    # The result stores the very peak % of peak is computed from: no rounding in between.
    assert local.summary()["peak_gflops"] == local.peak_gflops


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_a_run_agrees_with_itself_on_every_machine_kind(kind, tmp_path):
    out = tmp_path / "r.json"
    proc = run_cli("run", "--model", "unet-tiny", "--builds", "caffe2-nnpack,torch", "--repeats", "3",
                   "--warmup", "0", "--output", str(out), env={FAKE_CPUINFO_ENV: str(fake(kind))})
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert doc["device"]["cpu_model"] == kind.model
    assert doc["device"]["freq_ghz"] == pytest.approx(kind.ghz)
    assert doc["device"]["fp16_arithmetic"] == kind.fp16_math
    assert [b["status"] for b in doc["builds"]] == ["ok", "ok"]
    assert_derived_numbers_agree(doc)
    fp32_peak = pct_peak_gflops(doc)["fp32"]  # the peak of the run's basis, which the table shows
    assert f"peak {fp32_peak:.1f} GFLOP/s fp32" in proc.stdout


def test_fp16_arithmetic_path_under_an_avx512_fp16_machine(tmp_path):
    """fp16-winograd takes its fp16-arithmetic path where the CPU has AVX512-FP16. Under the
    Emerald Rapids fake it is compiled for this host's real CPU, so it runs here too."""
    out = tmp_path / "r.json"
    emr = next(k for k in KINDS if k.fp16_math)
    proc = run_cli("run", "--model", "unet-tiny", "--builds", "fp16-winograd", "--repeats", "2",
                   "--warmup", "0", "--output", str(out), env={FAKE_CPUINFO_ENV: str(fake(emr))})
    assert proc.returncode == 0, proc.stderr
    (b,) = json.loads(out.read_text())["builds"]
    assert b["status"] == "ok", b["message"]
    assert b["peak_dtype"] == "fp16" and b["max_rel_error"] <= b["tolerance"]
    assert any("fp16 arithmetic" in note for note in b["notes"])
    assert any(layer["impl"].startswith("winograd-fp16:") for layer in b["layers"])


def _host_has(flag: str) -> bool:
    return flag in Path("/proc/cpuinfo").read_text().split()


@pytest.mark.skipif(not _host_has("avx512_fp16"), reason="this CPU has no AVX512-FP16 (runs on Emerald Rapids)")
def test_fp16_arithmetic_natively_on_avx512_fp16(tmp_path):
    """With no fake: on a CPU that really has AVX512-FP16, the fp16 kernels run natively."""
    out = tmp_path / "r.json"
    proc = run_cli("run", "--model", "unet-tiny", "--builds", "fp16-winograd", "--repeats", "3",
                   "--warmup", "1", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    (b,) = doc["builds"]
    assert doc["device"]["fp16_arithmetic"] and b["status"] == "ok" and b["peak_dtype"] == "fp16"
    assert_derived_numbers_agree(doc)
