"""Which CPU a tuning database is for: its key, and which other CPU's database may stand in.

A database holds template parameters that were fastest on one CPU, so databases are filed per
CPU under each device: tuning/<device>/<cpu-key>/<kind>.json. The key is
`<llvm cpu>-<vector unit>[-fp16]`, e.g. `znver3-avx2`, `znver5-avx512`,
`emeraldrapids-avx512-fp16`, `cortex-a76-neon-fp16`, `cortex-a72-neon`:

- llvm cpu: the target's mcpu, else the device's `cpu`, else (target `host`) this host's CPU as
  LLVM names it, read from /proc/cpuinfo (harness.devices.peaks.llvm_cpu_name; LLVM's own
  detection for CPUs that table does not know);
- vector unit: what the templates are built around, from the same ISA flags simd_lanes reads:
  `avx512` (16 fp32 lanes), `avx2` / `avx` (8), `sse` (4), `neon` (4, 128-bit);
- `-fp16`: the device has fp16 arithmetic, so `fp16-winograd` computes in fp16 and its vector
  holds twice the lanes.

Stand-in rule (closest_key), for a CPU with no database of a kind: another CPU's database is
used only if its template saw vectors of the same lanes - the same vector unit, and for
`fp16-winograd` the same fp16 arithmetic - preferring the CPU whose LLVM name shares the
longest prefix with this one's (znver4 for znver5, cortex-a72 for cortex-a76). A database for
narrower or wider vectors is never used; the templates' untuned defaults are. Why: every tile
the templates take is valid at any width (loops are split with predicates), but a tile is
chosen for a register file, and none of the committed Zen 3 (8-lane) `tvm-conv2d` winners fits
a 16-lane one: 16 of the 30 take tx=8 columns, half of every zmm register, and the other 14
(tx=16 or 32, sized as 8-12 ymm accumulators) become 4-6 zmm accumulators, too few to cover
two FMA pipes' 4-cycle latency. Tiles tuned wide on a narrow machine need twice the registers
and spill. The untuned default is the first tile of the machine's own search space: full
vectors of its own width and at least 8 accumulators.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from harness.devices.config import Device
from harness.devices.peaks import llvm_cpu_name, read_cpuinfo
from harness.errors import UserError
from harness.names import SAFE_NAME_RULE, is_safe_name

# vector unit -> fp32 lanes of its widest register: the templates' tx unit (simd_lanes)
VECTOR_LANES = {"avx512": 16, "avx2": 8, "avx": 8, "sse": 4, "neon": 4}
# vector registers the ISA names: AVX-512 and AArch64 have 32, AVX2/AVX/SSE and 32-bit ARM's
# NEON (as q registers) 16. A register tile's accumulators must fit beside an input vector and
# a broadcast weight, so this bounds the conv templates' tiles (conv_direct.search_space).
WIDE_REGISTER_FILE = 32
NARROW_REGISTER_FILE = 16
FP16_SUFFIX = "-fp16"
FP16_KINDS = ("fp16-winograd",)  # kinds whose template computes in fp16 where the CPU can
X86 = ("x86_64", "i686")


@dataclass(frozen=True)
class CpuKey:
    cpu: str  # LLVM cpu name
    vector: str  # a VECTOR_LANES key
    fp16: bool  # fp16 arithmetic

    @property
    def name(self) -> str:
        return f"{self.cpu}-{self.vector}{FP16_SUFFIX if self.fp16 else ''}"

    def lanes(self, kind: str) -> int:
        """The lanes the `kind` template's vectors hold on this CPU."""
        return VECTOR_LANES[self.vector] * (2 if self.fp16 and kind in FP16_KINDS else 1)

    def can_stand_in_for(self, other: CpuKey, kind: str) -> bool:
        """Whether this CPU's database of `kind` was tuned for vectors like `other`'s."""
        same_fp16 = self.fp16 == other.fp16 or kind not in FP16_KINDS
        return self.vector == other.vector and same_fp16


def parse_key(name: str) -> CpuKey | None:
    """The key a folder name spells; None for any other name."""
    base, fp16 = (name.removesuffix(FP16_SUFFIX), True) if name.endswith(FP16_SUFFIX) else (name, False)
    cpu, _, vector = base.rpartition("-")
    return CpuKey(cpu, vector, fp16) if cpu and vector in VECTOR_LANES else None


def vector_unit(arch: str, isa: tuple[str, ...] | list[str]) -> str:
    """The widest vector unit among these ISA flags (an ARM core: 128-bit NEON)."""
    if arch not in X86:
        return "neon"
    flags = set(isa)
    return next((unit for unit, flag in (("avx512", "avx512f"), ("avx2", "avx2"), ("avx", "avx")) if flag in flags),
                "sse")


def vector_registers(arch: str, isa: tuple[str, ...] | list[str]) -> int:
    """How many vector registers the widest unit has (WIDE_REGISTER_FILE's comment)."""
    unit = vector_unit(arch, isa)
    wide = unit == "avx512" or (unit == "neon" and arch == "aarch64")
    return WIDE_REGISTER_FILE if wide else NARROW_REGISTER_FILE


def host_llvm_cpu() -> str:
    """This host's CPU as LLVM names it: from /proc/cpuinfo (or the test fake) where the
    table knows it, else LLVM's own detection (which a fake cannot change)."""
    known = llvm_cpu_name(read_cpuinfo())
    if known:
        return known
    from harness.builds.tvm_common import host_cpu  # noqa: PLC0415 - imports TVM

    return host_cpu()


def cpu_name(device: Device) -> str:
    """The LLVM cpu the device's code is compiled for."""
    mcpu = device.target.get("mcpu") if isinstance(device.target, dict) else None
    name = str(mcpu or device.cpu or (host_llvm_cpu() if device.target == "host" else "generic"))
    if not is_safe_name(name):
        raise UserError(f"device {device.name!r}: cpu {name!r} cannot name a tuning database folder "
                        f"(must be {SAFE_NAME_RULE})")
    return name


def cpu_key(device: Device) -> CpuKey:
    return CpuKey(cpu_name(device), vector_unit(device.arch, device.isa), device.fp16_arithmetic)


def _common_prefix(a: str, b: str) -> int:
    return len(os.path.commonprefix([a, b]))


def closest_key(key: CpuKey, available: list[CpuKey], kind: str) -> CpuKey | None:
    """The database that may stand in for `key`'s missing one of `kind` (module docstring);
    None: use the templates' defaults."""
    usable = [k for k in available if k != key and k.can_stand_in_for(key, kind)]
    return min(usable, key=lambda k: (-_common_prefix(k.cpu, key.cpu), k.name), default=None)
