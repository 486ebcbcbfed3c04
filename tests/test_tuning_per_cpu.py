"""Tuning databases per CPU: tuning/<device>/<cpu-key>/<kind>.json.

Each machine kind this project meets is run through the fake /proc/cpuinfo (tests/cpuinfo/,
HARNESS_FAKE_CPUINFO) or its devices.yaml entry, so no test depends on which CPU this session
got. Databases are real files written by TuningDatabase, builds and `harness tune` real runs.
"""
from __future__ import annotations

import io
import json

import pytest
import yaml
from rich.console import Console

from harness.devices import load_devices
from harness.devices.config import Device
from harness.devices.emulate import CPUS, Board, cpuinfo_text, device_entry
from harness.devices.peaks import FAKE_CPUINFO_ENV, llvm_cpu_name, parse_cpuinfo
from harness.tuning.cpukey import CpuKey, closest_key, cpu_key, parse_key
from harness.tuning.database import (NONE, OLD_LAYOUT, OWN, STAND_IN, Candidate, TuningDatabase, database_path,
                                     keyed_path, old_layout_path, resolve_database)
from tests.conftest import REPO, run_cli
from tests.test_cpu_kinds import FAKES

TARGET = {"kind": "llvm"}
X86_KEYS = {"zen3": "znver3-avx2", "zen5": "znver5-avx512", "emeraldrapids": "emeraldrapids-avx512-fp16"}


def machine(kind: str, monkeypatch: pytest.MonkeyPatch) -> Device:
    """The local device as detected on that machine kind."""
    monkeypatch.setenv(FAKE_CPUINFO_ENV, str(FAKES / f"{kind}.txt"))
    return load_devices(REPO / "devices.yaml").get("local")


def write_database(root, key: str, kind: str, params: dict, old_layout: bool = False):
    """The local device's database of `kind`, made on the CPU `key`, holding one workload "w"
    whose best is `params`; in the old per-device layout if `old_layout`."""
    cpu = parse_key(key)
    path = old_layout_path("local", kind, root) if old_layout else keyed_path("local", cpu, kind, root)
    db = TuningDatabase(path, kind, "local", {"kind": "llvm", "mcpu": cpu.cpu})
    db.add("w", "enc0.conv1", 1, Candidate(params, [1.0, 1.1]))
    db.save()
    return path


# ------------------------------------------------------------------ the key of each machine kind

@pytest.mark.parametrize("kind", sorted(X86_KEYS))
def test_the_key_of_each_x86_machine_kind(kind, monkeypatch):
    from harness.builds.tvm_common import simd_lanes

    device = machine(kind, monkeypatch)
    key = cpu_key(device)
    assert key.name == X86_KEYS[kind]
    assert parse_key(key.name) == key
    assert key.lanes("tvm-conv2d") == simd_lanes(device)  # the key's vectors are the template's
    assert database_path(device, "tvm-conv2d") == REPO / "tuning" / "local" / key.name / "tvm-conv2d.json"


@pytest.mark.parametrize("name, expected", [("rasp5", "cortex-a76-neon-fp16"), ("rasp4", "cortex-a72-neon"),
                                            ("rasp3b", "cortex-a53-neon")])
def test_the_key_of_each_pi(name, expected):
    assert cpu_key(load_devices(REPO / "devices.yaml").get(name)).name == expected


@pytest.mark.parametrize("cpu, expected", [("cortex-a76", "cortex-a76-neon-fp16"), ("cortex-a72", "cortex-a72-neon")])
def test_the_key_of_each_emulated_board_and_of_its_own_cpuinfo(cpu, expected, tmp_path):
    """The boards the tests emulate: their devices.yaml entry, and (for a harness run on the Pi
    itself) the /proc/cpuinfo the board shows, name the same CPU."""
    entry = device_entry(Board(tmp_path, CPUS[cpu], torch=True), {"host": "127.0.0.1", "port": 2222, "user": "pi"})
    devices = tmp_path / "devices.yaml"
    devices.write_text(yaml.safe_dump({"default": "pi", "devices": {"pi": entry}}))
    key = cpu_key(load_devices(devices).get("pi"))
    assert key.name == expected
    assert llvm_cpu_name(parse_cpuinfo(cpuinfo_text(CPUS[cpu], 4))) == key.cpu


def test_the_cpuinfo_table_names_this_host_as_llvm_does():
    """The x86 table (harness.devices.peaks.X86_MODELS) follows LLVM's host detection: on
    whichever of the machine kinds this runs, both give one name."""
    from harness.builds.tvm_common import host_cpu
    from harness.devices.peaks import read_cpuinfo

    known = llvm_cpu_name(read_cpuinfo())
    if known is None:
        pytest.skip("this CPU is not in the table (LLVM names it)")
    assert known == host_cpu()


def test_a_cpu_name_that_cannot_be_a_folder_is_one_clear_line(tmp_path):
    devices = tmp_path / "devices.yaml"
    devices.write_text(yaml.safe_dump({"default": "pi", "devices": {"pi": {
        "transport": "ssh", "host": "127.0.0.1", "user": "pi", "arch": "aarch64", "cores": 4, "freq_ghz": 2.4,
        "flops_per_cycle": {"fp32": 16, "fp16": 32},
        "target": {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "../a76"}}}}))
    done = run_cli("tune", "--devices-file", str(devices), "--model", "unet-tiny", "--builds", "tvm",
                   "--tuning-dir", str(tmp_path / "tuning"), timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "harness: error: device 'pi': cpu '../a76' cannot name a tuning database folder "
        "(must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit)"]
    assert not (tmp_path / "tuning").exists()


# ------------------------------------------------------------------ which database a build applies

@pytest.mark.parametrize("kind", ["zen3", "zen5"])
def test_zen3_and_zen5_databases_side_by_side_are_each_picked_on_their_own_cpu(kind, monkeypatch, tmp_path):
    tiles = {"znver3-avx2": {"tf": 4, "ty": 2, "tx": 8, "order": "yfx_pad"},
             "znver5-avx512": {"tf": 4, "ty": 2, "tx": 16, "order": "yfx_pad"}}
    for key, params in tiles.items():
        write_database(tmp_path, key, "tvm-conv2d", params)
    used = resolve_database(machine(kind, monkeypatch), "tvm-conv2d", TARGET, tmp_path)
    assert used.source == OWN
    assert used.db.path == tmp_path / "local" / X86_KEYS[kind] / "tvm-conv2d.json"
    assert used.db.best_params("w") == tiles[X86_KEYS[kind]]
    shown = f"{tmp_path.name}/local/{X86_KEYS[kind]}/tvm-conv2d.json"
    assert used.note == f"tvm-conv2d tuning database: {shown} (this CPU's)"
    assert used.record(tmp_path) == {"kind": "tvm-conv2d", "cpu_key": X86_KEYS[kind], "source": OWN,
                                     "database": f"local/{X86_KEYS[kind]}/tvm-conv2d.json",
                                     "sha256": used.db.sha256}


def test_a_cpu_without_a_database_uses_one_with_the_same_lanes_and_says_so(monkeypatch, tmp_path):
    """Emerald Rapids (16 fp32 lanes, fp16 arithmetic) has none: Zen 5's 16-lane tvm-conv2d stands
    in; Zen 5's fp16-winograd was tuned for fp32 arithmetic (16 lanes, not 32) and does not."""
    for kind in ("tvm-conv2d", "fp16-winograd"):
        write_database(tmp_path, "znver5-avx512", kind, {"tx": 16})
        write_database(tmp_path, "znver3-avx2", kind, {"tx": 8})
    emr = machine("emeraldrapids", monkeypatch)
    conv = resolve_database(emr, "tvm-conv2d", TARGET, tmp_path)
    assert conv.source == STAND_IN and conv.db.best_params("w") == {"tx": 16}
    assert conv.note == (f"no tvm-conv2d tuning database for this CPU (emeraldrapids-avx512-fp16): using "
                         f"{tmp_path.name}/local/znver5-avx512/tvm-conv2d.json, tuned on znver5-avx512 for the same "
                         "16-lane vectors; run `harness tune --device local` for this CPU's own")
    assert conv.record(tmp_path)["database"] == "local/znver5-avx512/tvm-conv2d.json"
    winograd = resolve_database(emr, "fp16-winograd", TARGET, tmp_path)
    assert winograd.source == NONE and winograd.db.records == {}
    assert winograd.note == (f"no fp16-winograd tuning database for this CPU (emeraldrapids-avx512-fp16) nor one for "
                             f"its 32-lane vectors ({tmp_path.name}/local has znver3-avx2, znver5-avx512): untuned "
                             "template defaults; run `harness tune --device local`")
    assert winograd.record(tmp_path)["database"] is None


@pytest.mark.parametrize("kind, other", [("zen5", "znver3-avx2"), ("zen3", "znver5-avx512")])
def test_a_database_for_narrower_or_wider_vectors_is_not_used(kind, other, monkeypatch, tmp_path):
    write_database(tmp_path, other, "tvm-conv2d", {"tx": 8})
    used = resolve_database(machine(kind, monkeypatch), "tvm-conv2d", TARGET, tmp_path)
    assert used.source == NONE and used.db.best_params("w") is None
    assert "\n" not in used.note
    assert used.note.startswith(f"no tvm-conv2d tuning database for this CPU ({X86_KEYS[kind]})")
    assert f"has {other}): untuned template defaults" in used.note


def test_the_closest_stand_in_is_the_same_cpu_line():
    avx512 = [parse_key(k) for k in ("emeraldrapids-avx512-fp16", "znver4-avx512", "znver3-avx2")]
    assert closest_key(CpuKey("znver5", "avx512", False), avx512, "tvm-conv2d") == parse_key("znver4-avx512")
    neon = [parse_key(k) for k in ("cortex-a53-neon", "cortex-a72-neon")]
    a76 = parse_key("cortex-a76-neon-fp16")
    assert closest_key(a76, neon, "tvm-conv2d") == parse_key("cortex-a72-neon")
    assert closest_key(a76, neon, "fp16-winograd") is None  # fp16 arithmetic: twice the lanes
    assert parse_key("skylake-avx512-avx512") == CpuKey("skylake-avx512", "avx512", False)
    assert parse_key("notes") is None and parse_key("znver3-avx7") is None


def test_the_committed_databases_are_zen3s():
    assert not list((REPO / "tuning" / "local").glob("*.json"))  # none left in the old layout
    committed = sorted((REPO / "tuning" / "local" / "znver3-avx2").glob("*.json"))
    assert [p.name for p in committed] == ["fp16-winograd.json", "tvm-conv2d.json", "tvm-nnpack.json"]
    assert {json.loads(p.read_text())["target"]["mcpu"] for p in committed} == {"znver3"}


# ------------------------------------------------------------------ the old layout

def test_an_old_layout_database_is_used_on_its_cpu_with_how_to_move_it(monkeypatch, tmp_path):
    from harness.tuning.command import database_to_extend

    old = write_database(tmp_path, "znver3-avx2", "tvm-conv2d", {"tx": 8}, old_layout=True)
    zen3 = machine("zen3", monkeypatch)
    used = resolve_database(zen3, "tvm-conv2d", TARGET, tmp_path)
    assert used.source == OLD_LAYOUT and used.db.path == old and used.db.best_params("w") == {"tx": 8}
    assert used.note == (f"tvm-conv2d tuning database {tmp_path.name}/local/tvm-conv2d.json is in the old per-device "
                         f"layout: move it to {tmp_path.name}/local/znver3-avx2/tvm-conv2d.json "
                         "(mkdir -p, then git mv)")
    assert used.record(tmp_path)["database"] == "local/tvm-conv2d.json"

    # `harness tune` continues from it, into the new place
    console = Console(file=io.StringIO(), width=200)
    db = database_to_extend(zen3, "tvm-conv2d", TARGET, tmp_path, console)
    assert db.path == tmp_path / "local" / "znver3-avx2" / "tvm-conv2d.json" and db.best_params("w") == {"tx": 8}
    assert "continuing from" in console.file.getvalue()

    # made on another cpu: not used (its vector width is not recorded), and the line says so
    zen5 = resolve_database(machine("zen5", monkeypatch), "tvm-conv2d", TARGET, tmp_path)
    assert zen5.source == NONE
    assert (f"{tmp_path.name}/local/tvm-conv2d.json (old layout, tuned on znver3) is not used: move it to "
            f"{tmp_path.name}/local/<its CPU's key>/") in zen5.note


def test_tune_never_extends_a_stand_in(monkeypatch, tmp_path):
    from harness.tuning.command import database_to_extend

    write_database(tmp_path, "znver5-avx512", "tvm-conv2d", {"tx": 16})
    emr = machine("emeraldrapids", monkeypatch)
    db = database_to_extend(emr, "tvm-conv2d", TARGET, tmp_path, Console(file=io.StringIO()))
    assert db.path == tmp_path / "local" / "emeraldrapids-avx512-fp16" / "tvm-conv2d.json" and db.records == {}


# ------------------------------------------------------------------ real builds and a real tune

def _conv_impls(build: dict) -> set[str]:
    return {layer["impl"] for layer in build["layers"] if layer["op"] == "conv2d"}


def test_a_build_records_the_database_it_applied_and_the_fingerprint_hashes_it(table, monkeypatch, tmp_path):
    """Zen 5 with only Zen 3's database: untuned, and the line says so. With its own database
    (the default tiles, recorded as tuned): tuned, and the result names and hashes that file."""
    from harness.results.document import new_document
    from harness.results.fingerprint import short_hash
    from harness.runner.measure import Settings
    from harness.runner.run import RunRequest, run
    from harness.tuning.conv_direct import default_params
    from harness.tuning.conv_grouped import default_params as grouped_default
    from harness.tuning.tasks import unique_conv_layers

    zen5 = machine("zen5", monkeypatch)
    zen3_db = TuningDatabase(keyed_path("local", parse_key("znver3-avx2"), "tvm-conv2d", tmp_path), "tvm-conv2d",
                             "local", {"kind": "llvm", "mcpu": "znver3"})
    own = TuningDatabase(database_path(zen5, "tvm-conv2d", tmp_path), "tvm-conv2d", "local", TARGET)
    for layer in unique_conv_layers(table):
        for db, lanes in ((zen3_db, 8), (own, 16)):
            params = (grouped_default(layer, lanes) if layer.groups > 1 else default_params(layer, lanes)).to_json()
            db.add(layer.workload_key(), layer.id, 1, Candidate(params, [1.0]))
    zen3_db.save()

    def run_tvm() -> dict:
        # unfused: a pooled conv's tile would be refitted to the pool, which is not what is tested
        out = run(RunRequest(table, zen5, ["tvm"], Settings(0, 1), {"tvm": {"tuning_dir": str(tmp_path), "fuse": False}}))
        (build,) = out["builds"]
        assert build["status"] == "ok", build["message"]
        return new_document(zen5, table, out, commit=("0" * 40, False))

    doc = run_tvm()
    (build,) = doc["builds"]
    assert _conv_impls(build) == {"tvm:untuned"}
    assert [n for n in build["notes"] if "tuning database" in n] == [
        f"no tvm-conv2d tuning database for this CPU (znver5-avx512) nor one for its 16-lane vectors "
        f"({tmp_path.name}/local has znver3-avx2): untuned template defaults; run `harness tune --device local`"]
    assert build["tuning"] == [{"kind": "tvm-conv2d", "cpu_key": "znver5-avx512", "source": NONE,
                                "database": None, "sha256": None}]
    assert doc["fingerprint"]["software"]["tuning"] == {}

    own.save()
    doc = run_tvm()
    (build,) = doc["builds"]
    assert _conv_impls(build) == {"tvm"}
    digest = short_hash(own.path.read_bytes())
    assert build["tuning"] == [{"kind": "tvm-conv2d", "cpu_key": "znver5-avx512", "source": OWN,
                                "database": "local/znver5-avx512/tvm-conv2d.json", "sha256": digest}]
    assert doc["fingerprint"]["software"]["tuning"] == {"local/znver5-avx512/tvm-conv2d.json": digest}


def test_harness_tune_writes_into_the_current_cpus_folder(table, tmp_path):
    """`harness tune` on Zen 3 then on Zen 5 under one device name: two databases side by side."""
    from harness.tuning.tasks import unique_conv_layers

    workloads = {layer.workload_key() for layer in unique_conv_layers(table)}
    for kind, key in (("zen3", "znver3-avx2"), ("zen5", "znver5-avx512")):
        done = run_cli("tune", "--model", "unet-tiny", "--builds", "tvm", "--trials", "1", "--tuning-dir",
                       str(tmp_path), env={FAKE_CPUINFO_ENV: str(FAKES / f"{kind}.txt")}, timeout=900)
        assert done.returncode == 0, done.stderr
        assert f"tuning for CPU {key}: databases in" in done.stdout
        saved = json.loads((tmp_path / "local" / key / "tvm-conv2d.json").read_text())
        assert set(saved["records"]) == workloads
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.json")) == [
        "local/znver3-avx2/tvm-conv2d.json", "local/znver5-avx512/tvm-conv2d.json"]


def test_register_tiles_follow_the_register_file(table):
    """AVX2 (16 ymm) and 32-bit NEON keep tiles of at most 14 accumulators; AVX-512 and AArch64
    (32 registers) also get 16-28 and 8-row tiles. The narrow space is the one the committed
    Zen 3 databases were tuned over, unchanged."""
    from harness.tuning.conv_direct import search_space
    from harness.tuning.cpukey import vector_registers
    from harness.tuning.tasks import unique_conv_layers

    assert vector_registers("x86_64", ["avx2", "fma"]) == 16
    assert vector_registers("x86_64", ["avx2", "avx512f"]) == 32
    assert vector_registers("aarch64", ["asimd"]) == 32
    assert vector_registers("armv7l", ["neon"]) == 16

    def accumulators(p, lanes):
        return p.tf * p.ty * max(1, p.tx // lanes)

    for layer in unique_conv_layers(table):
        if layer.groups > 1:
            continue
        narrow, wide = search_space(layer, 16, 16), search_space(layer, 16, 32)
        assert set(narrow) <= set(wide)
        assert max(accumulators(p, 16) for p in narrow) <= 14
        assert max(accumulators(p, 16) for p in wide) <= 30
        big = [p for p in wide if accumulators(p, 16) > 14 or p.ty == 8]
        if layer.out_channels >= 16 and layer.out_shape[2] % 8 == 0:
            assert big, layer.id
