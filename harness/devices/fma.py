"""Measure the FMA throughput the cores really reach: the achievable compute ceiling.

The theoretical peak (cores x clock x FLOP/cycle, harness/devices/peaks.py) rests on a table
of FLOP/cycle and on a clock; this measures what the vector FMA units deliver. One copy of an
FMA-bound kernel runs per core at once (the all-core figure a multi-threaded kernel sees, as
clock.py's); each copy grows its loop until one run lasts MIN_SECONDS, then times REPEATS
runs. The record keeps those raw times; GFLOP/s is derived when read: copies x FLOPs per
run / the slowest copy's best run (a multi-threaded kernel waits for its slowest thread).
Times are each copy's own CPU time, as clock.py's: a copy descheduled by another job on a
shared machine does not read as slow arithmetic.

The kernel: twelve independent accumulator chains of vector FMAs (c = c x a + b), more than
FMA latency x FMA pipes on every core the harness targets (4 x 2 on Zen 4/5, Intel big cores
and Cortex-A76; 7 x 1 on Cortex-A72), so the pipes bound it and not the latency. Intrinsics
of the widest vector unit the device has: AVX-512 where the CPU has avx512f, else AVX2+FMA;
NEON on aarch64 and armv7 (VFPv4's fused multiply-add). fp16 is measured only where the ISA
has fp16 arithmetic (AVX512-FP16, `avx512_fp16`; ARMv8.2 FP16, `asimdhp`): elsewhere fp16
data is computed in fp32 and its ceiling is fp32's, which the record says. Which kernel to
run follows the device's detected ISA (so HARNESS_FAKE_CPUINFO's machine kinds are honoured);
the binary checks the CPU really has it and refuses otherwise, never dying of SIGILL. The sums
of the accumulators are printed: the compiler cannot drop work whose result is used.

Standard library only (this runs on devices too); compiled, cached, shipped and run by
harness/devices/cprobe.py exactly as the clock probe is.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.devices.cprobe import CProbe, probe_binary, run_on_every_core

PROBE_ENV = "HARNESS_FMA_PROBE"  # a probe binary the host cross-compiled and shipped
MIN_SECONDS = 0.05  # one timed run; long enough for the clock's resolution and a core's boost
REPEATS = 5  # best of five: a shared machine's preemption only ever slows a run down
CHAINS = 12
METHOD = (f"{CHAINS} independent vector FMA chains per core, one copy per core at once, best of "
          f"{REPEATS} runs of >= {MIN_SECONDS} s each; GFLOP/s = copies x FLOPs per run / the slowest "
          "copy's best run (an FMA counts as two FLOPs)")

_SOURCE = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* CPU time of this thread, not wall time: see the module docstring */
static double now(void) { struct timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t); return t.tv_sec + t.tv_nsec * 1e-9; }

typedef double (*kernel_fn)(long long iters, float seed, double *sink);

/* c = c * a + b on twelve independent chains. a = 0.5 and b = seed = 0.5 draw every value
   towards 1.0: no overflow and no subnormals, in fp16 too. The lanes' sum goes to *sink and
   is printed, so the work cannot be optimised away. */
#define CHAINS 12
#define KERNEL(NAME, ATTR, VEC, ELEM, LANES, SET1, FMA, ADD, STORE)                              \
ATTR static double NAME(long long iters, float seed, double *sink) {                                   \
    VEC a = SET1(0.5f), b = SET1(seed);                                                           \
    VEC c0 = SET1(seed), c1 = SET1(seed + 1), c2 = SET1(seed + 2), c3 = SET1(seed + 3);           \
    VEC c4 = SET1(seed + 4), c5 = SET1(seed + 5), c6 = SET1(seed + 6), c7 = SET1(seed + 7);       \
    VEC c8 = SET1(seed + 8), c9 = SET1(seed + 9), c10 = SET1(seed + 10), c11 = SET1(seed + 11);   \
    for (long long i = 0; i < iters; i++) {                                                        \
        c0 = FMA(c0, a, b); c1 = FMA(c1, a, b); c2 = FMA(c2, a, b); c3 = FMA(c3, a, b);           \
        c4 = FMA(c4, a, b); c5 = FMA(c5, a, b); c6 = FMA(c6, a, b); c7 = FMA(c7, a, b);           \
        c8 = FMA(c8, a, b); c9 = FMA(c9, a, b); c10 = FMA(c10, a, b); c11 = FMA(c11, a, b);       \
    }                                                                                             \
    VEC s = ADD(ADD(ADD(ADD(c0, c1), ADD(c2, c3)), ADD(ADD(c4, c5), ADD(c6, c7))),                \
                ADD(ADD(c8, c9), ADD(c10, c11)));                                                 \
    ELEM out[LANES];                                                                              \
    STORE(out, s);                                                                                \
    double total = 0;                                                                             \
    for (int k = 0; k < LANES; k++) total += (double)out[k];                                      \
    *sink += total;                                                                               \
    return 2.0 * CHAINS * LANES * (double)iters;                                                  \
}

#if defined(__x86_64__)
#include <immintrin.h>
#define FMA_PS512(c, a, b) _mm512_fmadd_ps(c, a, b)
#define FMA_PS256(c, a, b) _mm256_fmadd_ps(c, a, b)
#define FMA_PH512(c, a, b) _mm512_fmadd_ph(c, a, b)
#define SET1_PH512(x) _mm512_set1_ph((_Float16)(x))
KERNEL(avx512_fp32, __attribute__((target("avx512f"), noinline)), __m512, float, 16,
       _mm512_set1_ps, FMA_PS512, _mm512_add_ps, _mm512_storeu_ps)
KERNEL(avx2_fp32, __attribute__((target("avx2,fma"), noinline)), __m256, float, 8,
       _mm256_set1_ps, FMA_PS256, _mm256_add_ps, _mm256_storeu_ps)
KERNEL(avx512_fp16, __attribute__((target("avx512fp16,avx512bw,avx512vl,avx512f"), noinline)), __m512h,
       _Float16, 32, SET1_PH512, FMA_PH512, _mm512_add_ph, _mm512_storeu_ph)
static int cpu_has(const char *what) {
    __builtin_cpu_init();
    if (!strcmp(what, "avx512f")) return __builtin_cpu_supports("avx512f");
    if (!strcmp(what, "avx2+fma")) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (!strcmp(what, "avx512fp16")) return __builtin_cpu_supports("avx512fp16");
    return 0;
}
static const struct { const char *name, *needs; kernel_fn fn; } KERNELS[] = {
    {"avx512-fp32", "avx512f", avx512_fp32}, {"avx2-fp32", "avx2+fma", avx2_fp32},
    {"avx512-fp16", "avx512fp16", avx512_fp16}};
#elif defined(__aarch64__) || defined(__ARM_NEON)
#include <arm_neon.h>
#include <sys/auxv.h>
#define FMA_F32(c, a, b) vfmaq_f32(b, c, a)
KERNEL(neon_fp32, __attribute__((noinline)), float32x4_t, float, 4, vdupq_n_f32, FMA_F32, vaddq_f32, vst1q_f32)
#if defined(__aarch64__)
#define FMA_F16(c, a, b) vfmaq_f16(b, c, a)
#define SET1_F16(x) vdupq_n_f16((float16_t)(x))
KERNEL(neon_fp16, __attribute__((target("arch=armv8.2-a+fp16"), noinline)), float16x8_t, float16_t, 8,
       SET1_F16, FMA_F16, vaddq_f16, vst1q_f16)
static int cpu_has(const char *what) {
    unsigned long hw = getauxval(AT_HWCAP);
    if (!strcmp(what, "asimd")) return (hw >> 1) & 1;  /* HWCAP_ASIMD */
    if (!strcmp(what, "asimdhp")) return (hw >> 10) & 1;  /* HWCAP_ASIMDHP */
    return 0;
}
static const struct { const char *name, *needs; kernel_fn fn; } KERNELS[] = {
    {"neon-fp32", "asimd", neon_fp32}, {"neon-fp16", "asimdhp", neon_fp16}};
#else
static int cpu_has(const char *what) {
    unsigned long hw = getauxval(AT_HWCAP);
    return !strcmp(what, "neon+vfpv4") && ((hw >> 12) & 1) && ((hw >> 16) & 1);  /* HWCAP_NEON, HWCAP_VFPv4 */
}
static const struct { const char *name, *needs; kernel_fn fn; } KERNELS[] = {{"neon-fp32", "neon+vfpv4", neon_fp32}};
#endif
#endif

int main(int argc, char **argv) {
    int n = sizeof KERNELS / sizeof KERNELS[0], k = 0;
    if (argc < 2) { printf("usage: %s KERNEL [MIN_SECONDS [REPEATS]]\n", argv[0]); return 2; }
    while (k < n && strcmp(KERNELS[k].name, argv[1])) k++;
    if (k == n) { printf("no kernel %s in this probe\n", argv[1]); return 2; }
    if (!cpu_has(KERNELS[k].needs)) { printf("this CPU lacks %s, which %s needs\n", KERNELS[k].needs, argv[1]); return 3; }
    double min_s = argc > 2 ? atof(argv[2]) : 0.05;
    int repeats = argc > 3 ? atoi(argv[3]) : 5;
    if (!(min_s > 0 && min_s <= 10) || repeats < 1 || repeats > 100) { printf("bad MIN_SECONDS or REPEATS\n"); return 2; }
    volatile float seed_in = 0.5f;  /* read at run time: no constant for the compiler to fold */
    float seed = seed_in;
    double sink = 0, flops = 0, times[100];
    long long iters = 1024;
    for (;;) {  /* grow the loop until one run lasts min_s */
        double t0 = now();
        KERNELS[k].fn(iters, seed, &sink);
        double dt = now() - t0;
        if (dt >= min_s || iters > (1LL << 40)) break;
        iters = dt < min_s / 8 ? iters * 8 : (long long)(iters * 1.05 * min_s / dt) + 1;
    }
    for (int r = 0; r < repeats; r++) {
        double t0 = now();
        flops = KERNELS[k].fn(iters, seed, &sink);
        times[r] = now() - t0;
    }
    printf("%s %.0f %.17g", KERNELS[k].name, flops, sink);
    for (int r = 0; r < repeats; r++) printf(" %.9f", times[r]);
    printf("\n");
    return 0;
}
"""


def source_for(arch: str) -> str | None:
    return _SOURCE if arch in ("x86_64", "aarch64", "armv7l") else None


def flags_for(arch: str) -> tuple[str, ...]:
    # armv7: NEON with VFPv4's fused multiply-add (a Pi 3's Cortex-A53 in 32-bit mode); a
    # Raspberry Pi OS compiler defaults to armv6 without NEON. x86 and aarch64 need nothing:
    # each kernel carries its own target attribute and runs only where the CPU has it.
    return ("-march=armv7-a", "-mfpu=neon-vfpv4", "-mfloat-abi=hard") if arch == "armv7l" else ()


FMA_PROBE = CProbe("fma", PROBE_ENV, source_for, flags_for)


@dataclass(frozen=True)
class KernelChoice:
    """Which probe kernel measures a dtype on this ISA, or why none does."""
    kernel: str | None
    why_not: str | None = None


def fp32_kernel(arch: str, isa: set[str]) -> KernelChoice:
    if arch == "x86_64":
        if "avx512f" in isa:
            return KernelChoice("avx512-fp32")
        if {"avx2", "fma"} <= isa:
            return KernelChoice("avx2-fp32")
        return KernelChoice(None, "no FMA instructions (neither AVX-512 nor AVX2+FMA)")
    if arch == "aarch64":
        return KernelChoice("neon-fp32")
    if arch == "armv7l":
        if {"neon", "vfpv4"} <= isa:
            return KernelChoice("neon-fp32")
        return KernelChoice(None, "no NEON with VFPv4 fused multiply-add")
    return KernelChoice(None, f"no FMA probe for arch {arch}")


def fp16_kernel(arch: str, isa: set[str]) -> KernelChoice:
    if arch == "x86_64" and "avx512_fp16" in isa:
        return KernelChoice("avx512-fp16")
    if arch == "aarch64" and "asimdhp" in isa:
        return KernelChoice("neon-fp16")
    flag = {"x86_64": "avx512_fp16", "aarch64": "asimdhp"}.get(arch, "fp16 arithmetic")
    return KernelChoice(None, f"no fp16 arithmetic (no {flag}): fp16 data is computed in fp32, "
                              "so fp16's ceiling is fp32's")


@dataclass(frozen=True)
class FmaSamples:
    """One dtype's raw measurement."""
    kernel: str
    flops_per_run: float  # of one copy's one run
    samples_s: list[list[float]]  # per copy (one per core), each timed run's seconds

    @property
    def gflops(self) -> float:
        return all_core_gflops(self.flops_per_run, self.samples_s)

    def to_json(self) -> dict[str, Any]:
        return {"kernel": self.kernel, "flops_per_run": self.flops_per_run, "samples_s": self.samples_s,
                "gflops": self.gflops}


def all_core_gflops(flops_per_run: float, samples_s: list[list[float]]) -> float:
    """copies x FLOPs per run / the slowest copy's best run."""
    slowest_best = max(min(copy) for copy in samples_s)
    return len(samples_s) * flops_per_run / slowest_best / 1e9


@dataclass(frozen=True)
class FmaPeak:
    """The measured FMA throughput; None for a dtype that could not be measured, with why."""
    fp32: FmaSamples | None
    fp16: FmaSamples | None
    note: str | None  # where the probe came from, or "unknown: ..." when nothing was measured
    fp16_note: str | None = None  # why there is no fp16 figure
    copies: int = 1

    def to_json(self) -> dict[str, Any]:
        return {"method": METHOD, "copies": self.copies, "note": self.note, "fp16_note": self.fp16_note,
                "fp32": self.fp32.to_json() if self.fp32 else None,
                "fp16": self.fp16.to_json() if self.fp16 else None}


def parse_output(lines: list[str], kernel: str) -> FmaSamples | str:
    """Each copy's line "KERNEL FLOPS SUM S1 S2 ...": the samples, or what is wrong with them."""
    runs: list[list[float]] = []
    flops = 0.0
    for line in lines:
        words = line.split()
        try:
            name, flops, total, times = words[0], float(words[1]), float(words[2]), [float(w) for w in words[3:]]
        except (IndexError, ValueError):
            return f"the probe printed {line.strip()[:80]!r}, not its timings"
        if name != kernel or not times or not math.isfinite(total) or total <= 0 or min(times) <= 0:
            return f"the probe's output is implausible: {line.strip()[:80]!r}"
        runs.append(times)
    return FmaSamples(kernel, flops, runs) if runs else "the probe printed nothing"


def measure_kernel(exe: Path, choice: KernelChoice, copies: int, min_s: float, repeats: int
                   ) -> tuple[FmaSamples | None, str | None]:
    """One dtype's samples, or None and why."""
    if choice.kernel is None:
        return None, choice.why_not
    ran = run_on_every_core(exe, copies, (choice.kernel, repr(min_s), str(repeats)))
    if ran.outputs is None:
        return None, f"unknown: {ran.error}"
    parsed = parse_output(ran.outputs, choice.kernel)
    return (None, f"unknown: {parsed}") if isinstance(parsed, str) else (parsed, None)


def measure_fma_peak(copies: int, arch: str | None = None, isa: set[str] | None = None,
                     min_s: float = MIN_SECONDS, repeats: int = REPEATS) -> FmaPeak:
    """The all-core FMA throughput of this machine, fp32 and (where it has the arithmetic) fp16.
    `arch` and `isa` default to this machine's, as detected from /proc/cpuinfo."""
    if arch is None or isa is None:
        from harness.devices.peaks import detect_host  # noqa: PLC0415

        host = detect_host()
        arch, isa = arch or host.arch, set(host.isa) if isa is None else isa
    fp32_choice = fp32_kernel(arch, isa)
    if fp32_choice.kernel is None:
        return FmaPeak(None, None, f"unknown: {fp32_choice.why_not}", copies=copies)
    exe, note = probe_binary(FMA_PROBE)
    if exe is None:
        return FmaPeak(None, None, f"unknown: {note}", copies=copies)
    fp32, why = measure_kernel(exe, fp32_choice, copies, min_s, repeats)
    if fp32 is None:
        return FmaPeak(None, None, why, copies=copies)
    fp16, why16 = measure_kernel(exe, fp16_kernel(arch, isa), copies, min_s, repeats)
    return FmaPeak(fp32, fp16, note, why16, copies)


def fma_gflops(system: dict[str, Any]) -> dict[str, float | None] | None:
    """{"fp32": GFLOP/s, "fp16": GFLOP/s or None} from a result's system block, recomputed from
    the raw run times; None where the result has no FMA measurement (older files, or none)."""
    record = system.get("fma_peak")
    if not record or not record.get("fp32"):
        return None
    return {dtype: all_core_gflops(r["flops_per_run"], r["samples_s"]) if (r := record.get(dtype)) else None
            for dtype in ("fp32", "fp16")}
