"""`harness tune --device` on boards: candidates compiled on the host and timed through TVM's
RPC, on the emulated Raspberry Pi 5 (behind an SSH port forward) and on a farm of two host
boards; written to the device's databases and applied by the next build. The board's times
are qemu's: these tests assert the mechanics, never speed."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.board import EmulatedBoard, cli, pi5_board  # noqa: F401
from tests.sshd import free_port
from tests.test_farm import farm  # noqa: F401

pytest.importorskip("tvm")

TRIALS = 2  # per workload: for the hybrid, `tvm` and one NNPACK candidate
TUNED = ["enc1.conv2", "mid.conv2"]  # --layers: two workloads of unet-tiny's 11 (each takes ~8 s on the board)


def board_servers(board: EmulatedBoard) -> list[str]:
    """Command lines of the tuning servers running on the emulated board (its processes are
    this machine's)."""
    board_dir, found = str(Path(board.python).parents[1]), []
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = path.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue  # ended meanwhile
        if "harness.farm.server" in argv and "--secret-from-env" in argv and any(board_dir in a for a in argv):
            found.append(" ".join(argv))
    return found


def test_tune_on_the_board_then_the_build_applies_it(pi5_board: EmulatedBoard, tmp_path):  # noqa: F811
    from harness.builds.tvm_common import target_dict
    from harness.builds.tvm_pure import is_untuned
    from harness.deploy.ssh_run import run_over_ssh
    from harness.devices import load_devices
    from harness.model import get_model
    from harness.runner.measure import Settings
    from harness.tuning.database import database_path, load_database
    from harness.tuning.tasks import unique_conv_layers

    name, tuning = pi5_board.name, tmp_path / "tuning"
    device = load_devices(pi5_board.devices_file).get(name)
    done = cli("tune", "--devices-file", str(pi5_board.devices_file), "--device", name, "--model", "unet-tiny",
               "--builds", "tvm-nnpack", "--trials", str(TRIALS), "--layers", ",".join(TUNED),
               "--tuning-dir", str(tuning), timeout=1800)
    assert done.returncode == 0, done.stderr
    assert f"timing candidates on {name} over SSH" in done.stdout
    assert board_servers(pi5_board) == []  # stopped at the end, not left for its `timeout`

    table = get_model("unet-tiny")
    workloads = {table[layer_id].workload_key() for layer_id in TUNED}
    assert len(workloads) == len(TUNED) < len(unique_conv_layers(table))
    planned = len(workloads) * TRIALS
    assert done.stdout.count(f"{planned}/{planned}") >= 2  # the progress bars, one per database
    # filed under the board's CPU: tuning/<device>/cortex-a76-neon-fp16/
    conv = json.loads(database_path(device, "tvm-conv2d", tuning).read_text())
    hybrid = json.loads(database_path(device, "tvm-nnpack", tuning).read_text())
    assert database_path(device, "tvm-conv2d", tuning).parent.name == "cortex-a76-neon-fp16"
    assert conv["target"]["mtriple"] == "aarch64-linux-gnu"  # cross-compiled for the board
    assert set(conv["records"]) == set(hybrid["records"]) == workloads
    for record in conv["records"].values():
        assert len(record["candidates"]) == TRIALS
        assert any(c["samples_ms"] for c in record["candidates"]), record
    for record in hybrid["records"].values():  # the choice table, measured on the board
        impls = {c["params"]["impl"]: c for c in record["candidates"]}
        assert set(impls) == {"tvm", "nnpack:ft8x8/compute"}
        assert impls["nnpack:ft8x8/compute"]["samples_ms"], impls  # NNPACK ran on the board

    # the next build, run on the board, takes its kernels and choices from these databases
    # (unfused: a pooled conv's tile would be refitted to hold the pool's windows)
    choices = load_database(device, "tvm-nnpack", target_dict(device), tuning)
    out = run_over_ssh(device, table, ["tvm-nnpack"], Settings(0, 1),
                       {"tvm-nnpack": {"tuning_dir": str(tuning), "fuse": False}}, lambda *a: None)
    build = out["builds"][0]
    assert build["status"] == "ok", build
    assert {t["kind"]: t["source"] for t in build["tuning"]} == {"tvm-conv2d": "own", "tvm-nnpack": "own"}
    impls = {layer["id"]: layer["impl"] for layer in build["layers"]}
    for layer in table.convs:
        if layer.workload_key() in workloads:
            assert impls[layer.id] == choices.best_params(layer.workload_key())["impl"]  # never "tvm:untuned"
        else:  # --layers left it alone
            assert is_untuned(impls[layer.id]), (layer.id, impls[layer.id])


def test_unreachable_device_is_one_clear_line(tmp_path):
    devices = tmp_path / "devices.yaml"
    devices.write_text(yaml.safe_dump({"default": "gone", "devices": {"gone": {
        "transport": "ssh", "host": "127.0.0.1", "port": free_port(), "user": "pi", "arch": "aarch64",
        "cores": 4, "freq_ghz": 2.4, "flops_per_cycle": {"fp32": 16, "fp16": 32}, "cross_compiler": "aarch64-linux-gnu-g++", "connect_timeout_s": 3,
        "target": {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a76", "mattr": ["+neon"]}}}}))
    done = cli("tune", "--devices-file", str(devices), "--device", "gone", "--model", "unet-tiny",
               "--builds", "tvm", "--trials", "1", "--tuning-dir", str(tmp_path / "tuning"), timeout=120)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("harness: error: device 'gone': cannot connect"), done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "tuning").exists()


@pytest.mark.parametrize("layers, says", [("enc0.pool", "'enc0.pool' is not a conv layer of unet-tiny"),
                                          ("enc9.conv1", "'enc9.conv1' is no layer of unet-tiny")])
def test_layers_that_are_not_convs_are_one_clear_line(layers, says, tmp_path):
    done = cli("tune", "--model", "unet-tiny", "--builds", "tvm", "--trials", "1", "--layers", f"enc1.conv2,{layers}",
               "--tuning-dir", str(tmp_path / "tuning"), timeout=120)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "its conv layers: enc0.conv1, " in lines[0], done.stderr
    assert not (tmp_path / "tuning").exists()


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_bad_candidate_timeout_is_one_clear_line(value, tmp_path):
    done = cli("tune", "--model", "unet-tiny", "--builds", "tvm", "--trials", "1", "--candidate-timeout", value,
               "--tuning-dir", str(tmp_path / "tuning"), timeout=120)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--candidate-timeout" in lines[0], done.stderr
    assert not (tmp_path / "tuning").exists()


def test_candidate_timeout_on_a_local_device_is_refused(tmp_path):
    done = cli("tune", "--model", "unet-tiny", "--builds", "tvm", "--trials", "1", "--candidate-timeout", "5",
               "--tuning-dir", str(tmp_path / "tuning"), timeout=120)
    assert done.returncode != 0
    assert done.stderr.strip() == ("harness: error: --candidate-timeout applies to ssh and rpc devices "
                                   "(a local candidate runs in this process)"), done.stderr
    assert not (tmp_path / "tuning").exists()


def test_tune_over_a_farm_of_two_boards_spreads_candidates_and_times_out_a_hung_one(farm, tmp_path):  # noqa: F811
    """Two host boards under one key (real TVM RPC servers, this machine's CPU): the candidates
    go to both, and a candidate not done within --candidate-timeout is recorded as timed out
    while the search goes on."""
    from harness.devices import load_devices
    from harness.model import get_model
    from harness.tuning.database import database_path
    from harness.tuning.tasks import unique_conv_layers

    port, _ = farm
    devices = tmp_path / "devices.yaml"
    devices.write_text(yaml.safe_dump({"default": "farm", "devices": {"farm": {
        "transport": "rpc", "tracker": {"host": "127.0.0.1", "port": port, "key": "farmtest"},
        "arch": "x86_64", "cores": 1, "freq_ghz": 2.0, "flops_per_cycle": {"fp32": 32, "fp16": 32},
        "target": "host", "command_timeout_s": 300}}}))
    tuning = tmp_path / "tuning"
    saved = database_path(load_devices(devices).get("farm"), "tvm-conv2d", tuning)
    base = ("tune", "--devices-file", str(devices), "--device", "farm", "--model", "unet-tiny", "--builds", "tvm",
            "--tuning-dir", str(tuning))
    done = cli(*base, "--trials", "2", timeout=600)
    assert done.returncode == 0, done.stderr
    assert "2 board(s) of key 'farmtest'" in " ".join(done.stdout.split())
    workloads = {layer.workload_key() for layer in unique_conv_layers(get_model("unet-tiny"))}
    records = json.loads(saved.read_text())["records"]
    assert set(records) == workloads
    assert all(len(r["candidates"]) == 2 and any(c["samples_ms"] for c in r["candidates"]) for r in records.values())
    served = {name: (tmp_path / f"{name}.log").read_text().count("start serving") for name in ("board-a", "board-b")}
    assert all(n >= 1 for n in served.values()), served  # one session per candidate, on both boards

    # a timeout too short for any candidate: each is recorded as timed out, and the search goes
    # on (it once aborted on std::length_error, TVM's timeout message read as a packet length)
    timed = cli(*base, "--trials", "3", "--candidate-timeout", "0.01", timeout=600)
    assert timed.returncode == 0, timed.stderr
    records = json.loads(saved.read_text())["records"]
    for record in records.values():
        assert len(record["candidates"]) == 3
        third = record["candidates"][2]
        assert third["samples_ms"] is None and "timed out" in third["error"], third

    # the boards still serve: a session ended at its deadline leaves its server running
    done = cli(*base, "--trials", "4", timeout=600)
    assert done.returncode == 0, done.stderr
    records = json.loads(saved.read_text())["records"]
    assert all(len(r["candidates"]) == 4 and r["candidates"][3]["samples_ms"] for r in records.values()), records
