"""qnnpack-int8: the network quantized by PyTorch's QNNPACK engine, run layer by layer by the
real runner, its error against the fp32 reference recorded, its rates a share of the int8 peak."""
from __future__ import annotations

import io

import pytest
import torch
from rich.console import Console

from harness.builds.qnnpack_int8 import QNNPACKInt8Build, calibration_inputs, quantize_table
from harness.devices import load_devices
from harness.devices.peak_basis import basis_of, pct_peak_gflops
from harness.devices.peaks import arm_int8_ops_per_cycle, x86_int8_ops_per_cycle
from harness.model import get_model
from harness.model.layers import CONV, RELU6
from harness.model.weights import make_input, make_weights
from harness.report.table import layer_table, print_run
from harness.report.view import run_view
from harness.results.document import new_document
from harness.results.store import load_result, save_result
from harness.runner.measure import Settings
from harness.runner.run import RunRequest, run
from tests.conftest import REPO, assert_derived_numbers_agree, run_cli

NAME = QNNPACKInt8Build.name
# Prefixes an impl may have: a QNNPACK kernel, one of ATen's own int8 kernels, or fp32.
INT8_PREFIXES = ("qnnpack:", "aten-int8:")
# fp32 builds agree with the reference to ~1e-6; int8 is off by a few quantization steps, so an
# error below this would mean the layers did not really run in int8.
INT8_ERROR_FLOOR = 1e-3


def run_int8(model: str, device, options: dict | None = None) -> dict:
    """The result document of a run of only this build, two timed passes."""
    table = get_model(model)
    out = run(RunRequest(table, device, [NAME], Settings(0, 2), {NAME: options or {}}))
    return new_document(device, table, out, commit=(None, None))


@pytest.fixture(scope="module", params=["unet-tiny", "shufflenet-v2-small"])
def int8_run(request, device) -> tuple[str, dict]:
    return request.param, run_int8(request.param, device)


def test_runs_within_its_tolerance_with_every_layer_timed_under_its_id(int8_run):
    model, doc = int8_run
    (b,) = doc["builds"]
    assert b["status"] == "ok", b["message"]
    assert INT8_ERROR_FLOOR < b["max_rel_error"] <= b["tolerance"] == QNNPACKInt8Build.tolerance
    assert [layer["id"] for layer in b["layers"]] == get_model(model).ids
    assert all(len(layer["samples_ms"]) == 2 and layer["median_ms"] > 0 for layer in b["layers"])


def test_impls_name_qnnpack_for_every_weighted_layer(int8_run):
    _, doc = int8_run
    (b,) = doc["builds"]
    for layer in b["layers"]:
        assert layer["impl"].startswith(INT8_PREFIXES), layer
        if layer["op"] in ("conv2d", "linear", "add"):
            assert layer["impl"].startswith(f"qnnpack:{'depthwise-' if 'depthwise' in layer['impl'] else ''}"
                                            f"{layer['op']}"), layer
    assert any("dequantizing the output" in note for note in b["notes"])


def test_rates_are_a_share_of_the_int8_peak(int8_run, device):
    _, doc = int8_run
    (b,) = doc["builds"]
    assert b["precision"] == "int8" and b["peak_dtype"] == "int8"
    int8_peak = pct_peak_gflops(doc)["int8"]  # at the clock of the run's peak basis
    assert int8_peak == pytest.approx(device.peak_gflops["int8"] * basis_of(doc).clock_mhz / (1000 * device.freq_ghz))
    assert int8_peak != pct_peak_gflops(doc)["fp32"]
    for layer in b["layers"]:
        assert layer["pct_peak"] == pytest.approx(100 * layer["gflops"] / int8_peak, rel=1e-12)
    assert_derived_numbers_agree(doc)


def test_the_terminal_table_says_gop_per_s_against_the_int8_peak(int8_run):
    _, doc = int8_run
    headers = [str(column.header) for column in layer_table(doc).columns]
    assert f"{NAME}\nGOP/s" in headers and not any("GFLOP/s" in h for h in headers)
    console = Console(file=io.StringIO(), width=400)
    print_run(doc, console)
    text = console.file.getvalue()
    assert f"{pct_peak_gflops(doc)['int8']:.1f} GOP/s int8" in text and "(GOP/s for int8 builds)" in text
    assert f"{NAME}: max relative error vs fp32 reference" in text and "(tolerance 0.25)" in text


def test_the_report_labels_the_build_gop_per_s(int8_run, tmp_path):
    _, doc = int8_run
    view = run_view([save_result(doc, tmp_path / "r.json")])  # also checks the file against the schema
    (b,) = view.ok_builds
    assert b.unit == "GOP/s" and b.peak == pct_peak_gflops(doc)["int8"]
    for row in view.rows:
        assert row.cells[NAME].pct_peak == pytest.approx(100 * row.cells[NAME].gflops / b.peak)


def test_harness_run_measures_it_in_its_own_process_and_the_page_says_gop_per_s(tmp_path):
    """The user's path: `harness run` (the build in a child process, as on a board), then
    `harness report`'s page."""
    out = tmp_path / "r.json"
    proc = run_cli("run", "--model", "unet-tiny", "--builds", NAME, "--repeats", "2", "--warmup", "0",
                   "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    doc = load_result(out)
    (b,) = doc["builds"]
    assert b["status"] == "ok" and b["process_env"] == {"OMP_WAIT_POLICY": "PASSIVE"}
    proc = run_cli("report", str(out), "--output-dir", str(tmp_path / "report"), "--results-root", str(tmp_path / "none"))
    assert proc.returncode == 0, proc.stderr
    page = next((tmp_path / "report").rglob("index.html")).read_text()
    assert 'id="int8-note"' in page and f"{doc['device']['peak_gflops']['int8']:.1f} GOP/s int8" in page
    assert f'title="{NAME}: GOP/s"' in page


def test_a_layer_kept_in_fp32_says_so(device):
    table = get_model("unet-tiny")
    first, last = table.convs[0].id, table.output_id
    doc = run_int8("unet-tiny", device, {"fp32_layers": [first, last]})
    (b,) = doc["builds"]
    assert b["status"] == "ok", b["message"]
    impls = {layer["id"]: layer["impl"] for layer in b["layers"]}
    assert impls[first] == impls[last] == "fp32:aten (not quantized: fp32_layers option)"
    assert all(impl.startswith(INT8_PREFIXES) for lid, impl in impls.items() if lid not in (first, last))
    assert b["max_rel_error"] <= b["tolerance"]


def test_an_unknown_fp32_layer_fails_the_build_with_its_name(device):
    (b,) = run_int8("unet-tiny", device, {"fp32_layers": ["no.such.layer"]})["builds"]
    assert b["status"] == "failed" and "no.such.layer" in b["message"]


def test_relu6_is_the_clamp_of_the_output_range():
    """MobileNet's ReLU6 runs as QNNPACK's output clamp: its int8 outputs never exceed 6."""
    torch.backends.quantized.engine = "qnnpack"
    table = get_model("mobilenet-v2-small")
    layers = quantize_table(table, make_weights(table), set(), calibration_inputs(table))
    relu6 = [layer for layer in table if layer.op == CONV and layer.activation == RELU6]
    assert relu6 and all("relu6" in layers[layer.id].impl for layer in relu6)
    acts = {"input": torch.from_numpy(make_input(table))}
    with torch.inference_mode():
        for layer in table:
            acts[layer.id] = layers[layer.id].fn(*(acts[src] for src in layer.inputs))
    tops = [float(acts[layer.id].dequantize().max()) for layer in relu6]
    assert max(tops) <= 6.0 + 1e-6 and min(tops) > 0


def test_int8_peaks_per_core_and_isa():
    assert arm_int8_ops_per_cycle("cortex-a76", set()) == 64  # SDOT: 16 MACs x 2 pipes
    assert arm_int8_ops_per_cycle("cortex-a72", set()) == 16  # SMLAL: 8 MACs x 1 pipe
    assert arm_int8_ops_per_cycle(None, {"asimd", "asimddp"}) == 64
    assert arm_int8_ops_per_cycle(None, {"asimd"}) == 16
    assert x86_int8_ops_per_cycle({"avx512f", "avx512_vnni", "avx2"}) == 256
    assert x86_int8_ops_per_cycle({"avx_vnni", "avx2"}) == 128
    assert x86_int8_ops_per_cycle({"avx2", "fma"}) == 64


def test_an_entry_without_int8_gets_its_cores_figure_or_twice_fp32(tmp_path):
    path = tmp_path / "devices.yaml"
    path.write_text("devices:\n"
                    "  pi5: {transport: ssh, host: h, arch: aarch64, cpu: cortex-a76, cores: 4, freq_ghz: 2.4,"
                    " target: {kind: llvm}}\n"
                    "  odd: {transport: ssh, host: h, arch: aarch64, cpu: mystery, cores: 2, freq_ghz: 1.0,"
                    " flops_per_cycle: {fp32: 8, fp16: 16}, target: {kind: llvm}}\n"
                    "  given: {transport: ssh, host: h, arch: aarch64, cpu: mystery, cores: 1, freq_ghz: 1.0,"
                    " flops_per_cycle: {fp32: 8, fp16: 16, int8: 40}, target: {kind: llvm}}\n"
                    "default: pi5\n")
    reg = load_devices(path)
    assert reg.get("pi5").peak_gflops["int8"] == pytest.approx(4 * 2.4 * 64)
    assert reg.get("odd").flops_per_cycle["int8"] == 16
    assert reg.get("given").peak_gflops["int8"] == pytest.approx(40.0)


def test_the_shipped_pis_carry_their_int8_peaks():
    reg = load_devices(REPO / "devices.yaml")
    assert {name: reg.get(name).peak_gflops["int8"] for name in ("rasp3b", "rasp4", "rasp5")} == \
        {"rasp3b": pytest.approx(38.4), "rasp4": pytest.approx(96.0), "rasp5": pytest.approx(614.4)}



def test_it_deploys_over_ssh_and_runs_on_the_device_like_the_other_torch_builds(sshd, tmp_path):
    """Over a real OpenSSH server (the suite's loopback one): the harness is uploaded and the
    build compiles and runs on the device side, with nothing exported from the host."""
    from harness.deploy.ssh_run import run_over_ssh  # noqa: PLC0415

    device = load_devices(sshd.devices_file(tmp_path / "devices.yaml")).get("loopback")
    out = run_over_ssh(device, get_model("unet-tiny"), [NAME], Settings(0, 2), {}, lambda *a: None)
    (b,) = out["builds"]
    assert b["status"] == "ok", b["message"]
    assert b["peak_dtype"] == "int8" and b["max_rel_error"] <= b["tolerance"]
    assert [layer["id"] for layer in b["layers"]] == get_model("unet-tiny").ids
    assert QNNPACKInt8Build().export(None, tmp_path) == []  # type: ignore[arg-type]  # compiles on the device
