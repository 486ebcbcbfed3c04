"""An honest peak: the FMA throughput measured on the device, % of peak at the clock the cores
really ran (harness/devices/fma.py, peak_basis.py), and the warning when a direct method beats it.

Nothing here asserts on absolute speed: the CI machine is a Zen 3 (AVX2), a Zen 5 (AVX-512) or
a Xeon (AVX512-FP16), so every bound is relative to this machine's own theoretical figure.
"""
from __future__ import annotations

import copy
import json
import platform
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.devices import load_devices
from harness.devices.clock import CLOCK_PROBE, read_clock
from harness.devices.cprobe import LAUNCHER_ENV, compile_probe, probe_binary, run_on_every_core
from harness.devices.fma import FMA_PROBE, PROBE_ENV, REPEATS, fma_gflops, measure_fma_peak
from harness.devices.peak_basis import (MEASURED_CLOCK, NOMINAL_CLOCK, apply_basis, basis_of, choose_basis, measured_clock,
                                        pct_peak_gflops)
from harness.devices.peaks import FAKE_CPUINFO_ENV, detect_host
from harness.report.peak_check import direct_layers_above_peak, peak_warnings
from harness.report.table import run_warnings
from harness.results.store import load_result, save_result
from tests.conftest import REPO, assert_derived_numbers_agree

X86 = platform.machine() == "x86_64"
# Sane bounds of the measured FMA throughput, relative to cores x measured clock x FLOP/cycle:
# below, the probe is not FMA-bound (or the FLOP/cycle table is far off); above, the peak is wrong.
LOW, HIGH = 0.30, 1.30


@pytest.fixture
def real_cpu(monkeypatch):
    """This machine as it is: no fake /proc/cpuinfo, no probe shipped from elsewhere."""
    for var in (FAKE_CPUINFO_ENV, PROBE_ENV, LAUNCHER_ENV):
        monkeypatch.delenv(var, raising=False)


def theoretical_at_measured_clock(dtype_index: int = 0) -> float:
    host = detect_host()
    mhz = read_clock(host.cores).mhz
    assert mhz, "the clock probe must run here"
    return host.cores * mhz / 1000 * host.flops_per_cycle[dtype_index]


def test_the_fma_probe_runs_here_within_sane_bounds_of_the_theoretical_peak(real_cpu):
    host = detect_host()
    fma = measure_fma_peak(host.cores)
    assert fma.fp32 is not None, fma.note
    assert len(fma.fp32.samples_s) == host.cores and all(len(s) == REPEATS for s in fma.fp32.samples_s)
    ratio = fma.fp32.gflops / theoretical_at_measured_clock()
    assert LOW < ratio < HIGH, f"measured {fma.fp32.gflops:.1f} GFLOP/s is {ratio:.0%} of the theoretical peak"
    if X86:
        assert fma.fp32.kernel == ("avx512-fp32" if "avx512f" in host.isa else "avx2-fp32")
    if host.fp16_arithmetic:  # AVX512-FP16 (Xeon) or ARMv8.2 FP16: measured, and as fast or faster
        assert fma.fp16 is not None, fma.fp16_note
        assert LOW < fma.fp16.gflops / theoretical_at_measured_clock(1) < HIGH
    else:
        assert fma.fp16 is None and "computed in fp32" in fma.fp16_note
    record = fma.to_json()
    assert fma_gflops({"fma_peak": json.loads(json.dumps(record))})["fp32"] == pytest.approx(fma.fp32.gflops)


@pytest.mark.skipif(not X86, reason="the x86 kernels")
def test_without_fp16_arithmetic_fp16_is_said_to_be_computed_in_fp32(real_cpu):
    """Every CI machine kind has AVX2+FMA: asked for that ISA alone, fp16 is not measured."""
    fma = measure_fma_peak(1, "x86_64", {"avx2", "fma"}, min_s=0.01, repeats=2)
    assert fma.fp32 is not None and fma.fp32.kernel == "avx2-fp32", fma.note
    assert fma.fp16 is None and "no avx512_fp16" in fma.fp16_note and "computed in fp32" in fma.fp16_note


def test_the_probe_refuses_what_it_cannot_measure_in_one_line(real_cpu):
    exe, note = probe_binary(FMA_PROBE)
    assert exe is not None, note
    out = run_on_every_core(exe, 1, ("no-such-kernel",))
    assert out.outputs is None and "no kernel no-such-kernel" in out.error
    out = run_on_every_core(exe, 1, ("avx2-fp32" if X86 else "neon-fp32", "-1"))
    assert out.outputs is None and "bad MIN_SECONDS" in out.error
    no_fma = measure_fma_peak(2, "x86_64", {"avx"})
    assert no_fma.fp32 is None and no_fma.note.startswith("unknown: ") and "no FMA" in no_fma.note


def test_a_broken_launcher_is_one_line_not_a_traceback(real_cpu, monkeypatch):
    monkeypatch.setenv(LAUNCHER_ENV, "qemu-aarch64 -cpu 'cortex-a76")  # an unclosed quote
    broken = measure_fma_peak(1)
    assert broken.fp32 is None and broken.note.startswith(f"unknown: {LAUNCHER_ENV}=") and "not a command" in broken.note
    monkeypatch.setenv(LAUNCHER_ENV, "/nonexistent/qemu")
    assert "cannot run the probe" in read_clock(1).note


@pytest.mark.parametrize("device_name,elf_class,machine", [("rasp5", "ELF64", "AArch64"), ("rasp3b", "ELF32", "ARM")])
def test_the_probes_cross_compile_for_a_pi_as_arm_executables(tmp_path, device_name, elf_class, machine):
    """What an SSH run ships to a board of another arch: both probes, static ARM executables,
    named by the environment variables the board's runner reads."""
    from harness.deploy.ssh_run import cross_probes

    pi = load_devices(REPO / "devices.yaml").get(device_name)
    shipped = cross_probes(pi, tmp_path)
    assert set(shipped) == {CLOCK_PROBE.env, FMA_PROBE.env}
    for exe in shipped.values():
        header = subprocess.run(["readelf", "-h", str(exe)], capture_output=True, text=True, check=True).stdout
        assert re.search(rf"Class:\s+{elf_class}", header) and re.search(rf"Machine:\s+{machine}\b", header)
        assert "EXEC (Executable file)" in header  # static: no libc on the board to match
    disassembly = subprocess.run([f"{pi.cross_compiler.removesuffix('g++')}objdump", "-d", str(shipped[FMA_PROBE.env])],
                                 capture_output=True, text=True, check=True).stdout
    # The FMA instructions themselves: NEON fused multiply-adds (fp16 ones on aarch64 too).
    fma = r"fmla\tv\d+\.8h" if machine == "AArch64" else r"vfma\.f32\tq"
    assert re.search(fma, disassembly), fma


@pytest.mark.skipif(shutil.which("qemu-aarch64") is None, reason="qemu-user is installed by scripts/setup.sh --dev")
def test_an_emulated_board_runs_the_shipped_probe_through_its_launcher(tmp_path, monkeypatch):
    """As on `harness devices emulate`'s board: the host's static aarch64 probe, run through
    the board's launcher (qemu-aarch64). The emulated A76 has ARMv8.2 FP16 and the A72 has not:
    the probe measures fp16 on the one and refuses it on the other instead of dying of SIGILL."""
    exe = tmp_path / FMA_PROBE.shipped_name
    assert compile_probe(FMA_PROBE, "aarch64-linux-gnu-gcc", "aarch64", exe, static=True) is None
    monkeypatch.setenv(PROBE_ENV, str(exe))
    monkeypatch.setenv(LAUNCHER_ENV, "qemu-aarch64 -cpu cortex-a76")
    a76 = measure_fma_peak(1, "aarch64", {"asimd", "asimdhp"}, min_s=0.01, repeats=2)
    assert a76.note == "probe cross-compiled by the host"
    assert a76.fp32.kernel == "neon-fp32" and a76.fp16.kernel == "neon-fp16", (a76.note, a76.fp16_note)
    monkeypatch.setenv(LAUNCHER_ENV, "qemu-aarch64 -cpu cortex-a72")
    a72 = measure_fma_peak(1, "aarch64", {"asimd", "asimdhp"}, min_s=0.01, repeats=2)
    assert a72.fp32 is not None and a72.fp16 is None and "lacks asimdhp" in a72.fp16_note


def test_the_emulated_boards_python_hands_the_launcher_to_its_processes():
    from harness.devices.emulate import CPUS, wrapper_text

    text = wrapper_text("/usr/bin/qemu-aarch64", CPUS["cortex-a76"], Path("/b/rootfs"))
    assert f"export {LAUNCHER_ENV}='/usr/bin/qemu-aarch64 -cpu cortex-a76 -L /b/rootfs'" in text


DEVICE = {"cores": 4, "freq_ghz": 2.4, "flops_per_cycle": {"fp32": 16, "fp16": 32, "int8": 64},
          "peak_gflops": {"fp32": 4 * 2.4 * 16, "fp16": 4 * 2.4 * 32, "int8": 4 * 2.4 * 64}}


@pytest.mark.parametrize("state,basis,mhz", [
    ({"governor": None, "freq_fixed": None, "clock_mhz_measured": 3000.0}, MEASURED_CLOCK, 3000.0),  # a VM
    ({"governor": "ondemand", "freq_fixed": False, "clock_mhz_measured": 1800.0}, MEASURED_CLOCK, 1800.0),
    ({"governor": "performance", "freq_fixed": False, "clock_mhz_measured": None}, NOMINAL_CLOCK, 2400.0),
    ({"governor": "userspace", "freq_fixed": True, "clock_mhz_measured": None}, NOMINAL_CLOCK, 2400.0),
    ({"governor": None, "freq_fixed": None, "clock_mhz_measured": None,
      "clock_note": "unknown: no C compiler (cc) on the device"}, NOMINAL_CLOCK, 2400.0),
])
def test_pct_peak_uses_the_measured_clock_exactly_when_the_clock_is_not_pinned(state, basis, mhz):
    chosen = choose_basis(DEVICE, state)
    assert chosen.basis == basis and chosen.clock_mhz == mhz
    assert chosen.gflops == pytest.approx({d: 4 * mhz / 1000 * n for d, n in DEVICE["flops_per_cycle"].items()})
    if state.get("clock_note"):
        assert "no C compiler" in chosen.reason


def test_the_peak_takes_the_higher_clock_of_before_and_after_the_run():
    """A reading is CPU time over dependent adds: a shared or ramping core reads low, never high."""
    state = {"governor": None, "freq_fixed": None, "clock_mhz_measured": 3893.0}
    assert measured_clock(state, {"clock_mhz_measured": 4218.0}) == 4218.0
    assert measured_clock(state, {"clock_mhz_measured": 3000.0}) == 3893.0
    assert measured_clock(state, {"clock_mhz_measured": None}) == 3893.0 == measured_clock(state, None)
    assert measured_clock({"clock_mhz_measured": None}, {"clock_mhz_measured": 4000.0}) == 4000.0
    chosen = choose_basis(DEVICE, state, {"clock_mhz_measured": 4218.0})
    assert chosen.basis == MEASURED_CLOCK and chosen.clock_mhz == 4218.0 and "before and after" in chosen.reason


def test_an_emulated_board_keeps_its_pis_clock():
    chosen = choose_basis({**DEVICE, "emulated": True}, {"governor": None, "clock_mhz_measured": 700.0})
    assert chosen.basis == NOMINAL_CLOCK and chosen.clock_mhz == 2400.0 and "qemu" in chosen.reason


def test_a_run_records_both_peaks_and_the_measured_fma_beside_them(tiny_result):
    """A real `harness run`: device.peak_gflops stays the nominal clock's, device.peak is the
    basis every pct_peak is a share of, and system.fma_peak keeps the raw run times."""
    doc = load_result(tiny_result)  # checked against the schema
    before, dev = doc["system"]["before"], doc["device"]
    after = doc["system"]["after"]
    assert dev["peak"] == choose_basis(dev, before, after).to_json()
    if before["clock_mhz_measured"]:  # a clock that is not pinned (this project's VMs)
        assert dev["peak"]["basis"] == MEASURED_CLOCK
        assert dev["peak"]["clock_mhz"] == max(before["clock_mhz_measured"], after.get("clock_mhz_measured") or 0)
    assert_derived_numbers_agree(doc)
    fma = doc["system"]["fma_peak"]
    assert fma["copies"] == dev["cores"] and len(fma["fp32"]["samples_s"]) == dev["cores"]
    ratio = fma_gflops(doc["system"])["fp32"] / dev["peak"]["gflops"]["fp32"]
    if dev["peak"]["basis"] == MEASURED_CLOCK:
        assert LOW < ratio < HIGH


def test_old_results_without_a_basis_stay_valid_and_keep_the_nominal_peak(tiny_result, tmp_path):
    from harness.report.view import run_view

    doc = json.loads(tiny_result.read_text())
    del doc["device"]["peak"], doc["system"]["fma_peak"]
    for build in doc["builds"]:
        for layer in build["layers"]:
            layer["pct_peak"] = 100 * layer["gflops"] / doc["device"]["peak_gflops"][build["peak_dtype"]]
    old = save_result(doc, tmp_path / "old.json")
    view = run_view([old])
    assert view.peak_basis.basis == NOMINAL_CLOCK and pct_peak_gflops(doc) == doc["device"]["peak_gflops"]
    assert view.fma_gflops is None
    assert_derived_numbers_agree(load_result(old))


def _direct_layer_at(doc: dict, pct: float, spread: float = 0.01) -> dict:
    """The torch build's first convolution (oneDNN, a direct method) made to run at `pct` % of
    the peak, its five samples within +-spread."""
    build = next(b for b in doc["builds"] if b["name"] == "torch")
    layer = next(x for x in build["layers"] if x["op"] == "conv2d" and x["flops"])
    peak = pct_peak_gflops(doc)[build["peak_dtype"]]
    ms = layer["flops"] / (pct / 100 * peak * 1e6)
    layer["samples_ms"] = [ms * (1 + spread * f) for f in (0, -1, 1, 0.5, -0.5)]
    layer["median_ms"] = ms
    layer["gflops"] = layer["flops"] / (ms * 1e6)
    layer["pct_peak"] = 100 * layer["gflops"] / peak
    return layer


def test_a_direct_layer_above_100_percent_warns_that_the_peak_is_wrong(tiny_result):
    doc = load_result(tiny_result)
    layer = _direct_layer_at(doc, 130)
    assert [a.layer for a in direct_layers_above_peak(doc)] == [layer["id"]]
    (warning,) = [w for w in run_warnings(doc) if "the peak is wrong" in w]
    assert layer["id"] in warning and "130%" in warning and "a direct method cannot beat" in warning
    # A Winograd layer counts FLOPs it does not do: above the peak is expected of it.
    layer["impl"] = "nnpack:wt8x8/precompute"
    assert direct_layers_above_peak(doc) == [] and not any("the peak is wrong" in w for w in peak_warnings(doc))


def test_a_direct_layer_above_100_percent_only_through_its_noise_is_not_warned_about(tiny_result):
    doc = load_result(tiny_result)
    _direct_layer_at(doc, 101, spread=0.10)  # its slower quartile is at ~96 %
    assert direct_layers_above_peak(doc) == []


def test_the_report_shows_the_basis_the_nominal_peak_the_fma_and_the_warning(tiny_result, tmp_path):
    from harness.report.pages import write_run_report
    from harness.report.plots import roofline
    from harness.report.view import run_view

    doc = load_result(tiny_result)
    layer = _direct_layer_at(doc, 130)
    path = save_result(doc, tmp_path / "above.json")
    page = write_run_report([path], tmp_path / "reports", results_root=tmp_path / "store").read_text()
    basis = basis_of(doc)
    peaks = re.search(r'id="peaks"[^>]*>([^<]*)<', page).group(1)
    assert f"{basis.gflops['fp32']:.1f} GFLOP/s fp32" in peaks and f"at the {basis.basis}" in peaks
    fma = re.search(r'id="fma-peak"[^>]*>([^<]*)<', page).group(1)
    assert f"{fma_gflops(doc['system'])['fp32']:.1f} GFLOP/s fp32" in fma and "achievable ceiling" in fma
    if basis.basis != NOMINAL_CLOCK:
        nominal = re.search(r'id="peak-nominal"[^>]*>([^<]*)<', page).group(1)
        assert f"{doc['device']['peak_gflops']['fp32']:.1f} GFLOP/s fp32" in nominal
    warnings = re.search(r'id="warnings">(.*?)</ul>', page, re.S).group(1)
    assert "the peak is wrong" in warnings and layer["id"] in warnings
    labels = roofline(run_view([path])).axes[0].get_legend_handles_labels()[1]
    assert any(f"at the {basis.basis}" in label and label.startswith("compute ceiling") for label in labels)
    assert any(label.startswith("achievable: measured FMA throughput") for label in labels)


def test_an_emulated_boards_page_says_its_fma_and_clock_are_qemus(tiny_result, tmp_path):
    from harness.report.pages import write_run_report

    doc = load_result(tiny_result)
    doc["device"]["emulated"] = True
    doc["system"]["before"]["clock_mhz_measured"] = 700.0  # what qemu's add chain might say
    apply_basis(doc)
    assert basis_of(doc).basis == NOMINAL_CLOCK
    assert not any("the cores ran at" in w for w in run_warnings(doc))
    page = write_run_report([save_result(copy.deepcopy(doc), tmp_path / "emu.json")], tmp_path / "reports",
                            results_root=tmp_path / "store").read_text()
    fma = re.search(r'id="fma-peak"[^>]*>([^<]*)<', page).group(1)
    assert "not a Pi&#39;s" in fma or "not a Pi's" in fma
    assert "700 MHz, all cores busy (under qemu-user: not a Pi" in page


def test_a_run_over_ssh_measures_the_fma_throughput_on_the_device(sshd, tmp_path):
    from tests.sshd import harness_cli, ssh_env

    devices = sshd.devices_file(tmp_path / "devices.yaml", cores=1)
    out = tmp_path / "remote.json"
    proc = harness_cli(["run", "--device", "loopback", "--model", "unet-tiny", "--builds", "torch", "--warmup", "0",
                        "--repeats", "2", "--devices-file", str(devices), "--output", str(out)], ssh_env(tmp_path / "home"))
    assert proc.returncode == 0, proc.stderr
    doc = load_result(out)
    fma = doc["system"]["fma_peak"]
    assert fma["copies"] == 1 and fma["fp32"] is not None, fma["note"]
    assert doc["device"]["peak"] == choose_basis(doc["device"], doc["system"]["before"], doc["system"]["after"]).to_json()
