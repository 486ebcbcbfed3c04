"""Arithmetic peaks: cores x GHz x FLOP/cycle/core, and detection of the host's own values.

These are theoretical figures at a given clock. Which clock a run's % of peak uses is
peak_basis.py's (the measured one where the clock is not pinned); what the FMA units really
deliver is measured by fma.py and recorded beside them.

FLOP/cycle/core counts a fused multiply-add as two FLOPs, over all SIMD FMA pipes:
- Cortex-A53 and A72: one 128-bit NEON FMA per cycle = 8 fp32; no fp16 arithmetic.
- Cortex-A76 (Pi 5): two 128-bit FMA pipes = 16 fp32, and 32 fp16 (ARMv8.2 FP16 arithmetic).
- x86 with AVX2+FMA (two 256-bit FMA ports on Zen and Intel big cores) = 32 fp32.
- x86 with AVX-512 (two 512-bit FMA ports assumed) = 64 fp32; AVX512-FP16 doubles it for fp16.
Where a core has no fp16 arithmetic, fp16 data is computed in fp32, so its fp16 peak is its
fp32 peak and builds report that they only *store* fp16.

int8 peaks count OPs the same way (an int8 multiply-accumulate is two OPs), over the widest
int8 multiply-accumulate instruction the SIMD unit has (INT8_PEAK_SOURCES says which and where
the figure comes from). They are vector peaks: QNNPACK, the int8 build's library, uses none of
SDOT, VNNI or AMX, so it sits well below them on cores that have those instructions, which is
what the % of peak is there to show.
"""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass

# cpu (LLVM -mcpu name) -> (fp32, fp16) FLOP/cycle/core
KNOWN_CORES: dict[str, tuple[int, int]] = {
    "cortex-a53": (8, 8),
    "cortex-a72": (8, 8),
    "cortex-a76": (16, 32),
}
# cpu -> int8 OP/cycle/core (2 x int8 multiply-accumulates per cycle), with where the figure is from.
INT8_OPS_PER_CYCLE: dict[str, int] = {
    "cortex-a53": 16,
    "cortex-a72": 16,
    "cortex-a76": 64,
}
INT8_PEAK_SOURCES: dict[str, str] = {
    # Arm publishes no Software Optimization Guide for the A53. Its SMLAL/SMLAL2 (8 x int8 ->
    # int16 MACs into a 128-bit accumulator) is taken at one per cycle, the rate the fp32 figure
    # above assumes for a 128-bit NEON multiply-accumulate.
    "cortex-a53": "SMLAL .8H, 8 MACs x 1/cycle (assumed as the fp32 128-bit FMLA rate; no Arm SOG for A53)",
    # Cortex-A72 Software Optimization Guide (Arm UAN 0016A, 2015), section 3, ASIMD integer
    # instructions: "ASIMD multiply accumulate long" SMLAL(2)/UMLAL(2), throughput 1, pipe F0 only.
    "cortex-a72": "SMLAL .8H, 8 MACs x 1/cycle on F0 (Cortex-A72 SOG, Arm UAN 0016A, ASIMD integer)",
    # Cortex-A76 Software Optimization Guide (Arm PJDOC-466751330-7215), ASIMD integer
    # instructions: "ASIMD dot product" SDOT/UDOT, throughput 2, pipes V (V0 and V1); a 128-bit
    # SDOT is 16 int8 MACs.
    "cortex-a76": "SDOT .4S, 16 MACs x 2/cycle on V0/V1 (Cortex-A76 SOG, Arm PJDOC-466751330-7215)",
}
# ARM "CPU part" in /proc/cpuinfo -> LLVM cpu name
ARM_PARTS = {"0xd03": "cortex-a53", "0xd08": "cortex-a72", "0xd0b": "cortex-a76"}
# x86 (vendor, cpu family) -> [(first model, last model, LLVM cpu name)], as LLVM's own host
# detection names them (llvm/lib/TargetParser/Host.cpp, getAMDProcessorTypeAndSubtype and
# getIntelProcessorTypeAndSubtype), for the kinds this project meets and their neighbours. The
# tuning databases are filed under this name (harness/tuning/cpukey.py); reading it from
# cpuinfo rather than asking LLVM lets the test fake stand for each machine kind.
X86_MODELS: dict[tuple[str, int], list[tuple[int, int, str]]] = {
    ("AuthenticAMD", 25): [(0x00, 0x0F, "znver3"), (0x10, 0x1F, "znver4"), (0x20, 0x5F, "znver3"),
                           (0x60, 0x7F, "znver4"), (0xA0, 0xAF, "znver4")],
    ("AuthenticAMD", 26): [(0x00, 0x77, "znver5")],
    ("GenuineIntel", 6): [(0x6A, 0x6A, "icelake-server"), (0x6C, 0x6C, "icelake-server"),
                          (0x8F, 0x8F, "sapphirerapids"), (0xAD, 0xAD, "graniterapids"),
                          (0xCF, 0xCF, "emeraldrapids")],
}
# TEST FAKE: a file read in place of /proc/cpuinfo, so that detection (and every test that
# depends on it) can be run as on each machine kind this project meets (tests/cpuinfo/). A fake
# machine is a VM without cpufreq: sysfs frequencies are then not read either.
FAKE_CPUINFO_ENV = "HARNESS_FAKE_CPUINFO"


def cpuinfo_path() -> str:
    return os.environ.get(FAKE_CPUINFO_ENV) or "/proc/cpuinfo"


CPUFREQ = "/sys/devices/system/cpu/cpu{}/cpufreq/{}"


def read_cpufreq(cpu: int, name: str) -> str | None:
    """One cpufreq file of a core, stripped; None where there is none (VMs, the test fake)."""
    if os.environ.get(FAKE_CPUINFO_ENV):
        return None
    try:
        with open(CPUFREQ.format(cpu, name)) as f:
            return f.read().strip()
    except OSError:
        return None


@dataclass(frozen=True)
class HostInfo:
    arch: str
    cpu_model: str
    cpu: str | None  # LLVM cpu name where it can be told without TVM (ARM parts)
    cores: int
    freq_ghz: float | None
    isa: tuple[str, ...]  # the SIMD features that decide the peak
    flops_per_cycle: tuple[int, int]  # (fp32, fp16)
    int8_ops_per_cycle: int

    @property
    def fp16_arithmetic(self) -> bool:
        return self.flops_per_cycle[1] > self.flops_per_cycle[0]


def peak_gflops(cores: int, freq_ghz: float, flops_per_cycle: int) -> float:
    return cores * freq_ghz * flops_per_cycle


def parse_cpuinfo(text: str) -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo's text."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def read_cpuinfo() -> dict[str, str]:
    """The first processor's fields of this machine's /proc/cpuinfo ({} where there is none)."""
    try:
        with open(cpuinfo_path()) as f:
            return parse_cpuinfo(f.read())
    except OSError:
        return {}


def x86_flops_per_cycle(flags: set[str]) -> tuple[int, int]:
    if "avx512f" in flags:
        return 64, 128 if "avx512_fp16" in flags else 64
    if "avx2" in flags and "fma" in flags:
        return 32, 32
    if "avx" in flags:
        return 16, 16
    return 8, 8


def x86_int8_ops_per_cycle(flags: set[str]) -> int:
    """int8 OP/cycle/core of the x86 vector unit, two FMA-class ports assumed as for fp32.

    VPDPBUSD (u8 x s8, 4 products summed into each int32 lane; Intel SDM vol. 2, AVX512_VNNI and
    AVX_VNNI): 64 MACs per zmm, 32 per ymm, two per cycle on ports 0 and 5 of Intel server cores
    (Intel Intrinsics Guide / uops.info: throughput 0.5 CPI on Ice Lake-SP and later).
    Without VNNI, one 32-MAC step is VPMADDUBSW + VPMADDWD (+ VPADDD), both multiplies, so two
    multiply ports give 32 MACs per cycle. AMX tiles (amx_int8) are not counted: this is the
    SIMD peak, like the fp32 one.
    """
    if "avx512_vnni" in flags and "avx512f" in flags:
        return 2 * 2 * 64
    if "avx_vnni" in flags or "avx512_vnni" in flags:
        return 2 * 2 * 32
    if "avx2" in flags:
        return 2 * 32
    return 2 * 16  # SSSE3 PMADDUBSW + PMADDWD on 128-bit registers


def arm_int8_ops_per_cycle(cpu: str | None, features: set[str]) -> int:
    """int8 OP/cycle/core: the known cores' figures; otherwise SDOT where the core has it
    (`asimddp`), taken at two 128-bit pipes like the A76, else one SMLAL (8 MACs) per cycle."""
    if cpu in INT8_OPS_PER_CYCLE:
        return INT8_OPS_PER_CYCLE[cpu]
    return 2 * 2 * 16 if "asimddp" in features else 2 * 8


def arm_flops_per_cycle(cpu: str | None, features: set[str]) -> tuple[int, int]:
    if cpu in KNOWN_CORES:
        return KNOWN_CORES[cpu]
    fp32 = 8  # one 128-bit NEON FMA pipe: the conservative default for unknown cores
    return fp32, 2 * fp32 if "asimdhp" in features else fp32


def _cpuinfo_int(info: dict[str, str], field: str) -> int | None:
    try:
        return int(info.get(field, ""))  # the kernel prints family and model in decimal
    except ValueError:
        return None


def llvm_cpu_name(info: dict[str, str]) -> str | None:
    """The LLVM cpu name of the CPU /proc/cpuinfo's fields describe; None where the tables
    above do not know it (LLVM's own detection then has to say)."""
    if "CPU part" in info:
        return ARM_PARTS.get(info["CPU part"])
    family, model = _cpuinfo_int(info, "cpu family"), _cpuinfo_int(info, "model")
    for first, last, name in X86_MODELS.get((info.get("vendor_id", ""), family or 0), []):
        if model is not None and first <= model <= last:
            return name
    return None


def _max_freq_ghz(cpuinfo: dict[str, str]) -> float | None:
    try:
        return int(read_cpufreq(0, "cpuinfo_max_freq") or "") / 1e6
    except ValueError:
        pass
    mhz = cpuinfo.get("cpu MHz")
    return float(mhz) / 1000 if mhz else None


def detect_host() -> HostInfo:
    info = read_cpuinfo()
    arch = platform.machine()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if arch in ("x86_64", "i686"):
        flags = set(info.get("flags", "").split())
        simd = tuple(f for f in ("avx512_fp16", "avx512f", "avx512_vnni", "avx_vnni", "avx2", "fma", "avx", "f16c")
                     if f in flags)
        return HostInfo(arch, info.get("model name", "unknown"), None, cores, _max_freq_ghz(info),
                        simd, x86_flops_per_cycle(flags), x86_int8_ops_per_cycle(flags))
    features = set(info.get("Features", "").split())
    cpu = llvm_cpu_name(info)
    simd = tuple(f for f in ("neon", "asimd", "asimdhp", "asimddp", "fphp", "vfpv4") if f in features)
    model = info.get("model name") or cpu or "unknown"
    return HostInfo(arch, model, cpu, cores, _max_freq_ghz(info), simd, arm_flops_per_cycle(cpu, features),
                    arm_int8_ops_per_cycle(cpu, features))
