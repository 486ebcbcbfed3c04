"""devices.yaml: the devices a run can target, validated on load.

Every problem is reported as one line naming the file, the device and the field, raised as a
UserError (exit code 2). Fields a device leaves as `auto` (only sensible for `local`) are
detected on this host.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from harness.devices.peaks import INT8_OPS_PER_CYCLE, KNOWN_CORES, detect_host, peak_gflops
from harness.errors import UserError
from harness.names import SAFE_NAME_RULE, is_safe_name
from harness.userfiles import read_user_text

TRANSPORTS = ("local", "ssh", "rpc")
# Device names become path components and are printed: see harness/names.py.
RESERVED_NAMES = {"runs"}  # results/runs/ holds the run files beside asv's machine folders
DEFAULT_DEVICE = "local"
DEFAULT_DEVICES_FILE = Path(__file__).resolve().parents[2] / "devices.yaml"


@dataclass(frozen=True)
class Tracker:
    host: str
    port: int
    key: str  # the device key boards register under, e.g. "rasp3b"


@dataclass(frozen=True)
class Device:
    name: str
    transport: str
    arch: str
    cpu: str | None  # LLVM -mcpu name
    cpu_model: str
    cores: int
    freq_ghz: float
    flops_per_cycle: dict[str, int]  # {"fp32": n, "fp16": n, "int8": n}; int8 counts OPs
    target: dict[str, Any] | str  # a TVM target dict, or "host"
    description: str = ""
    isa: tuple[str, ...] = ()
    # ssh
    host: str | None = None
    port: int | None = None  # None: ~/.ssh/config's Port for the alias, else 22
    user: str | None = None
    proxy_jump: str | None = None  # like ssh -J: "[user@]host[:port][,...]" or "none"; wins over ~/.ssh/config
    key: str | None = None
    python: str = "python3"
    workdir: str = "/tmp/unet-harness"
    trust_on_first_use: bool = False
    known_hosts: str | None = None  # an extra known_hosts file, like OpenSSH's UserKnownHostsFile
    connect_timeout_s: float = 10.0
    command_timeout_s: float = 1800.0
    cross_compiler: str | None = None
    # A board emulated on this host (harness devices emulate): its times are qemu's, not a Pi's.
    emulated: bool = False
    # rpc
    tracker: Tracker | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def peak_gflops(self) -> dict[str, float]:
        return {dtype: peak_gflops(self.cores, self.freq_ghz, n) for dtype, n in self.flops_per_cycle.items()}

    @property
    def fp16_arithmetic(self) -> bool:
        return self.flops_per_cycle["fp16"] > self.flops_per_cycle["fp32"]

    def summary(self) -> dict[str, Any]:
        """The `device` block of a result file."""
        return {"name": self.name, "arch": self.arch, "cpu": self.cpu, "cpu_model": self.cpu_model,
                "cores": self.cores, "freq_ghz": self.freq_ghz, "isa": list(self.isa),
                "transport": self.transport, "flops_per_cycle": dict(self.flops_per_cycle),
                "fp16_arithmetic": self.fp16_arithmetic,
                # The theoretical peak at the NOMINAL clock. % of peak is a share of the
                # result's device.peak (harness/devices/peak_basis.py): these very numbers
                # (unrounded, so a reader who recomputes it gets the same value) when the clock
                # is pinned, the same FLOP/cycle at the measured clock when it is not.
                "peak_gflops": dict(self.peak_gflops),
                "emulated": self.emulated}


# How an emulated board's results are labelled, in the terminal table and on the report page.
EMULATED_LABEL = "emulated (qemu) - times are not a Pi's"


class _Entry:
    """Typed access to one device's mapping; every failure names file, device and field."""

    def __init__(self, path: Path, name: str, raw: dict[str, Any]):
        self.path, self.name, self.raw = path, name, raw
        self.used: set[str] = set()

    def fail(self, fld: str, problem: str) -> UserError:
        return UserError(f"{self.path}: device {self.name!r}: field {fld!r}: {problem}")

    def get(self, fld: str, check: Callable[[Any], bool], expected: str, default: Any = None,
            required: bool = False) -> Any:
        self.used.add(fld)
        if fld not in self.raw:
            if required:
                raise self.fail(fld, f"missing; expected {expected}")
            return default
        value = self.raw[fld]
        if not check(value):
            raise self.fail(fld, f"expected {expected}, got {value!r}")
        return value

    def unknown_fields(self) -> list[str]:
        return sorted(set(self.raw) - self.used)


def _is_pos_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _is_pos_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _is_str(v: Any) -> bool:
    return isinstance(v, str) and v != ""


def _is_ssh_word(v: Any) -> bool:
    # one ssh_config word: these fields are handed to paramiko's SSHConfig (harness/devices/ssh.py)
    return _is_str(v) and not re.search(r"[\s\"'#]", v)


def _is_jump_list(v: Any) -> bool:
    return _is_ssh_word(v) and all(hop for hop in v.split(","))


def _auto_or(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v == "auto" or check(v)


def _is_fpc(v: Any) -> bool:
    return (isinstance(v, dict) and {"fp32", "fp16"} <= set(v) <= {"fp32", "fp16", "int8"}
            and all(_is_pos_int(x) for x in v.values()))


def default_int8_ops(cpu: str | None, fp32: int, host_int8: int | None) -> int:
    """The int8 OP/cycle of an entry that does not give one: detected on the local host, the
    known core's figure, else twice fp32 - the rate of a core whose widest int8
    multiply-accumulate is a widening one (NEON SMLAL: 8 MACs per 128-bit instruction where
    FMLA does 4), the conservative reading for a core without dot-product instructions."""
    if host_int8 is not None:
        return host_int8
    return INT8_OPS_PER_CYCLE.get(cpu or "", 2 * fp32)


def _is_target(v: Any) -> bool:
    return v == "host" or (isinstance(v, dict) and _is_str(v.get("kind")))


def hard_float_abi(target: dict[str, Any] | str) -> dict[str, Any] | str:
    """An arm-*-gnueabihf target with "mfloat-abi": "hard" unless the entry sets it.

    Without it LLVM emits soft-float objects (the module's imports blob, devc.o, among them) and
    the hard-float cross g++ refuses the link: "ld: error: ... uses VFP register arguments,
    .../devc.o does not". Every armhf userland (Raspberry Pi OS 32-bit, Debian armhf) is hard-float.
    """
    if isinstance(target, dict) and str(target.get("mtriple", "")).endswith("gnueabihf") \
            and "mfloat-abi" not in target:
        return {**target, "mfloat-abi": "hard"}
    return target


def check_device_name(name: str, where: str) -> str:
    """`name` if it is safe as a path component and in terminal output, else a UserError."""
    if not is_safe_name(name) or name in RESERVED_NAMES:
        why = "is reserved" if name in RESERVED_NAMES else f"must be {SAFE_NAME_RULE}"
        raise UserError(f"{where}: device name {name!r} {why}")
    return name


def _parse_device(path: Path, name: str, raw: Any) -> Device:
    check_device_name(name, str(path))
    if not isinstance(raw, dict):
        raise UserError(f"{path}: device {name!r}: expected a mapping of fields, got {raw!r}")
    e = _Entry(path, name, raw)
    transport = e.get("transport", lambda v: v in TRANSPORTS, f"one of {', '.join(TRANSPORTS)}", "local")
    host_info = detect_host() if transport == "local" else None

    def detected(fld: str, check: Callable[[Any], bool], expected: str, value: Any) -> Any:
        v = e.get(fld, _auto_or(check), f"{expected} or 'auto'" if host_info else expected,
                  "auto" if host_info else None, required=host_info is None)
        if v != "auto":
            return v
        if host_info is None:
            raise e.fail(fld, "'auto' is only possible for a local device; give the value")
        if value is None:
            raise e.fail(fld, "could not be detected on this host; give the value")
        return value

    cpu = e.get("cpu", _is_str, "an LLVM cpu name such as cortex-a53", host_info.cpu if host_info else None)
    cores = detected("cores", _is_pos_int, "a positive integer", host_info and host_info.cores)
    freq = detected("freq_ghz", _is_pos_num, "a positive number of GHz", host_info and host_info.freq_ghz)
    default_fpc = (host_info.flops_per_cycle if host_info else KNOWN_CORES.get(cpu or ""))
    fpc = e.get("flops_per_cycle", _auto_or(_is_fpc), "{fp32: N, fp16: N[, int8: N]} with positive integers",
                "auto" if default_fpc else None, required=default_fpc is None)
    if fpc == "auto":
        if default_fpc is None:
            raise e.fail("flops_per_cycle", f"cpu {cpu!r} is not in the known table; give the value")
        fpc = {"fp32": default_fpc[0], "fp16": default_fpc[1]}
    host_int8 = host_info.int8_ops_per_cycle if host_info else None
    fpc = {**fpc, "int8": fpc.get("int8") or default_int8_ops(cpu, fpc["fp32"], host_int8)}
    arch = detected("arch", _is_str, "armv7l, aarch64 or x86_64", host_info and host_info.arch)
    target = e.get("target", _is_target, "a TVM target mapping with a 'kind', or 'host'",
                   "host" if host_info else None, required=host_info is None)
    target = hard_float_abi(target)
    tracker = None
    if transport == "rpc":
        t = e.get("tracker", lambda v: isinstance(v, dict) and _is_str(v.get("host")) and _is_pos_int(v.get("port"))
                  and _is_str(v.get("key")), "{host: H, port: P, key: K}", required=True)
        tracker = Tracker(t["host"], t["port"], t["key"])
    ssh_required = transport == "ssh"
    device = Device(
        name=name, transport=transport, arch=arch, cpu=cpu,
        cpu_model=e.get("cpu_model", _is_str, "a string", host_info.cpu_model if host_info else (cpu or "unknown")),
        cores=cores, freq_ghz=float(freq), flops_per_cycle=fpc, target=target,
        description=e.get("description", lambda v: isinstance(v, str), "a string", ""),
        isa=tuple(host_info.isa) if host_info else tuple(e.get("isa", lambda v: isinstance(v, list), "a list", [])),
        host=e.get("host", _is_str, "a host name or ~/.ssh/config alias", required=ssh_required),
        # no default: a port the entry gives must win over the alias's Port, even 22
        port=e.get("port", lambda v: _is_pos_int(v) and v < 65536, "a TCP port"),
        user=e.get("user", _is_ssh_word, "a user name without spaces or quotes"),
        proxy_jump=e.get("proxy_jump", _is_jump_list, "jump hosts like ssh -J: [user@]host[:port][,...], or none"),
        key=e.get("key", _is_str, "a path to a private key"),
        python=e.get("python", _is_str, "the remote python executable", "python3"),
        workdir=e.get("workdir", _is_str, "a remote directory", "/tmp/unet-harness"),
        trust_on_first_use=e.get("trust_on_first_use", lambda v: isinstance(v, bool), "true or false", False),
        known_hosts=e.get("known_hosts", _is_str, "a path to a known_hosts file"),
        connect_timeout_s=float(e.get("connect_timeout_s", _is_pos_num, "seconds", 10.0)),
        command_timeout_s=float(e.get("command_timeout_s", _is_pos_num, "seconds", 1800.0)),
        cross_compiler=e.get("cross_compiler", _is_str, "a cross C++ compiler command"),
        emulated=e.get("emulated", lambda v: isinstance(v, bool), "true or false", False),
        tracker=tracker,
        extra={k: raw[k] for k in e.unknown_fields() if k.startswith("x-")},
    )
    _reject_unknown_fields(e)
    return device


def _reject_unknown_fields(e: _Entry) -> None:
    unknown = [f for f in e.unknown_fields() if not f.startswith("x-")]
    if unknown:
        raise e.fail(unknown[0], "unknown field (fields of your own must start with 'x-')")


@dataclass(frozen=True)
class DeviceRegistry:
    path: Path
    devices: dict[str, Device]
    default: str

    def get(self, name: str | None) -> Device:
        name = name or self.default
        if name not in self.devices:
            raise UserError(f"unknown device {name!r} (not in {self.path}); known devices: "
                            f"{', '.join(self.devices)}")
        return self.devices[name]


def load_devices(path: Path | str | None = None) -> DeviceRegistry:
    path = Path(path) if path else DEFAULT_DEVICES_FILE
    text = read_user_text(path, "devices file", " (pass --devices-file PATH)")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = " ".join(str(getattr(exc, "problem", None) or "invalid YAML").split())
        raise UserError(f"{path}: not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise UserError(f"{path}: not valid YAML: nested too deeply") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("devices"), dict) or not doc["devices"]:
        raise UserError(f"{path}: expected a top-level 'devices:' mapping with at least one device")
    unknown_top = set(doc) - {"devices", "default"}
    if unknown_top:
        raise UserError(f"{path}: unknown top-level key {sorted(unknown_top)[0]!r} (expected 'devices', 'default')")
    devices = {str(name): _parse_device(path, str(name), raw) for name, raw in doc["devices"].items()}
    default = doc.get("default", DEFAULT_DEVICE)
    if default not in devices:
        raise UserError(f"{path}: default device {default!r} is not defined under 'devices'")
    return DeviceRegistry(path, devices, default)
