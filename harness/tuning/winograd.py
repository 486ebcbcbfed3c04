"""Winograd F(m x m, 3x3) convolution kernels for the `fp16-winograd` build, and their search space.

The arithmetic follows topi's Winograd (its Cook-Toom matrices A, B, G from
tvm.topi.nn.winograd_util; the computes of conv2d_winograd_nchw_without_weight_transform), but
the stages are written out here for speed on a CPU:

- the 3x3 weights are transformed once, at build time, in numpy (fp64, then stored as fp16):
  kpack[eps, nu, ci, co] = (G w G^T); topi's own weight transform crashes in TVM 0.27;
- the input and inverse transforms are *separable* (rows, then columns) and emitted as
  straight-line sums over the non-zero matrix entries: topi's single 6x6 reduction over a
  constant-matrix lookup costs 3x the operations and was what made the first attempt 10x
  slower than the direct conv;
- storage is fp16 (input, kpack, bias, output); `compute` is the arithmetic dtype (fp32 on a
  CPU without fp16 math, where LLVM would otherwise widen and round every half operation).

Kernel (NCHW, P = nH x nW tiles of m x m outputs, alpha = m + 2), measured stage by stage:

    parallel over (ci, tile row ty):                                    input transform
      rows = B^T . fp32(input rows ty*m-1 ..)   vectorised along the image row; the zero
                                                padding is a select on a clamped index
      V[eps, nu, ci, ty*nW + tx] = rows . B     per vector of tiles tx, all alpha^2 outputs
                                                straight-line (strided gathers loaded once)
    parallel over (eps, nu):                                            batched GEMM
      kpack[eps, nu] widened to fp32 once (k_cache)
      for each block of p_t tiles: copy V's column block to a contiguous buffer (in place,
        rows `tiles` floats apart alias one L1 set), then for each co_t channel tile:
        M[eps, nu, co, p] = sum_ci V * kpack   co_t x p_t register tile, p_t vectorised,
                                               kpack broadcast (the direct template's microkernel)
    parallel over (co, tile row ty):                                    inverse transform
      per vector of tiles: A^T M A straight-line in registers
      out row = fp16(relu(Y + bias)), vectorised along the row

Layers where Winograd does not pay (3 input channels, 3 output channels, small planes) can
use the direct template on an fp32 copy of fp16 data instead: the search includes both.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from harness.builds.base import is_study_conv
from harness.model.layers import RELU, RELU6, Layer
from harness.tuning import conv_grouped
from harness.tuning.conv_direct import ConvParams, schedule_conv, search_space
from harness.tuning.conv_grouped import GroupedParams, schedule_grouped

WINOGRAD = "winograd"
DIRECT = "direct"
TILE_SIZES = (4, 2, 6)  # F(4x4) first; F(6x6) only where 6 divides the plane (no unet layer)


@dataclass(frozen=True)
class WinogradParams:
    m: int  # output tile: F(m x m, 3x3)
    co_t: int  # output channels per GEMM register tile
    p_t: int  # tiles per GEMM register tile (the vectorised axis)
    k_cache: bool = True  # widen kpack to the compute dtype once per (eps, nu), not per use
    algo: str = WINOGRAD

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def label(self) -> str:
        return f"F{self.m}x{self.m}"


@dataclass(frozen=True)
class DirectParams:
    conv: ConvParams | GroupedParams  # the direct template's tile, or the grouped template's
    algo: str = DIRECT

    def to_json(self) -> dict[str, Any]:
        return {"algo": DIRECT, **self.conv.to_json()}

    @property
    def label(self) -> str:
        return "direct"


KernelParams = WinogradParams | DirectParams


def params_from_json(d: dict[str, Any]) -> KernelParams:
    if d.get("algo") == DIRECT:
        grouped = d.get("template") == "grouped"
        return DirectParams(GroupedParams.from_json(d) if grouped else ConvParams.from_json(d))
    return WinogradParams(int(d["m"]), int(d["co_t"]), int(d["p_t"]), bool(d["k_cache"]))


# ---------------------------------------------------------------- transforms (topi's matrices)

# m -> (A, B, G) as the host computed them, shipped in an exported module's manifest: a
# runtime-only TVM on the device (the armv7 board's) has no tvm.topi to compute them.
SHIPPED_MATRICES: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def transform_matrices(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """topi's Cook-Toom A (alpha x m), B (alpha x alpha), G (alpha x 3) for F(m x m, 3x3)."""
    return SHIPPED_MATRICES[m] if m in SHIPPED_MATRICES else _topi_matrices(m)


@lru_cache(maxsize=None)
def _topi_matrices(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from tvm.topi.nn.winograd_util import _cook_toom_convolution, _interpolation_points  # noqa: PLC0415

    return tuple(np.asarray(x, dtype=np.float64) for x in _cook_toom_convolution(_interpolation_points(m + 2), m, 3))


def transform_weights(weight: np.ndarray, m: int) -> np.ndarray:
    """OIHW 3x3 weights -> kpack[eps, nu, ci, co] = G w G^T, in fp64 (cast by the caller)."""
    _, _, G = transform_matrices(m)
    return np.einsum("ak,oikl,bl->abio", G, weight.astype(np.float64), G)


def _combine(coeffs: np.ndarray, terms: list, dtype: str) -> Any:
    """sum(c * t) over the non-zero coefficients, with the +-1 multiplications left out."""
    from tvm import tirx  # noqa: PLC0415

    out = None
    for c, t in zip(coeffs, terms):
        if c == 0:
            continue
        term = t if c == 1 else -t if c == -1 else t * tirx.const(float(c), dtype)
        out = term if out is None else out + term
    return out


def _transform(matrix: np.ndarray, col, terms: list, dtype: str) -> Any:
    """sum_k matrix[k, col] * terms[k] for a loop variable `col`: one straight-line sum per
    column, selected by `col`. The schedule unrolls `col`, and the select folds away."""
    from tvm import tirx  # noqa: PLC0415

    exprs = [_combine(matrix[:, j], terms, dtype) for j in range(matrix.shape[1])]
    out = exprs[-1]
    for j in range(len(exprs) - 2, -1, -1):
        out = tirx.Select(col == j, exprs[j], out)
    return out


# ---------------------------------------------------------------- computes

@dataclass(frozen=True)
class Geometry:
    """Tile counts of F(m x m, 3x3) over one layer's output plane."""

    c_in: int
    c_out: int
    h: int
    w: int
    m: int

    @property
    def alpha(self) -> int:
        return self.m + 2

    @property
    def n_h(self) -> int:
        return -(-self.h // self.m)

    @property
    def n_w(self) -> int:
        return -(-self.w // self.m)

    @property
    def tiles(self) -> int:
        return self.n_h * self.n_w

    @classmethod
    def of(cls, layer: Layer, m: int) -> Geometry:
        _, c_in, h, w = layer.in_shape
        return cls(c_in, layer.out_channels, h, w, m)


def input_transform(g: Geometry, data, compute: str):
    """data (1, ci, h, w) -> V[eps, nu, ci, tile] = B^T d B, with the zero padding folded in.

    Out-of-image reads use a clamped index under a select (both sides are evaluated, no branch),
    so the row pass stays a plain vector loop along the image row."""
    from tvm import te, tirx  # noqa: PLC0415

    _, B, _ = transform_matrices(g.m)
    m, n_w = g.m, g.n_w
    zero = tirx.const(0, compute)

    def row_in(c, y, x):  # input row y (padded coordinates), fp16 -> compute
        inside = tirx.all(y >= 1, y <= g.h)
        return tirx.Select(inside, data[0, c, tirx.max(tirx.min(y - 1, g.h - 1), 0), x].astype(compute), zero)

    rows = te.compute((g.c_in, g.n_h, g.alpha, g.w),
                      lambda c, ty, e, x: _transform(B, e, [row_in(c, ty * m + a, x) for a in range(g.alpha)], compute),
                      name="rows")

    def col_in(c, ty, e, x):  # column x of the row-transformed tile row (padded coordinates)
        inside = tirx.all(x >= 1, x <= g.w)
        return tirx.Select(inside, rows[c, ty, e, tirx.max(tirx.min(x - 1, g.w - 1), 0)], zero)

    return te.compute((g.alpha, g.alpha, g.c_in, g.tiles),
                      lambda e, nu, c, p: _transform(B, nu, [col_in(c, p // n_w, e, (p % n_w) * m + b)
                                                             for b in range(g.alpha)], compute),
                      name="data_pack")


def batched_gemm(g: Geometry, V, kpack, compute: str):
    """M[eps, nu, co, tile] = sum_ci V[eps, nu, ci, tile] * kpack[eps, nu, ci, co]."""
    from tvm import te  # noqa: PLC0415

    rc = te.reduce_axis((0, g.c_in), name="rc")
    kf = te.compute(kpack.shape, lambda *i: kpack(*i).astype(compute), name="kpack_wide")
    return te.compute((g.alpha, g.alpha, g.c_out, g.tiles),
                      lambda e, nu, co, p: te.sum(V[e, nu, rc, p] * kf[e, nu, rc, co], axis=rc),
                      name="bgemm")


def inverse_transform(g: Geometry, M, bias, relu: bool, storage: str, compute: str):
    """out (1, co, h, w) = storage(relu(A^T M A + bias))."""
    from tvm import te, tirx  # noqa: PLC0415

    A, _, _ = transform_matrices(g.m)
    m, n_w = g.m, g.n_w
    inv_rows = te.compute((g.c_out, m, g.alpha, g.tiles),
                          lambda co, i, b, p: _transform(A, i, [M[a, b, co, p] for a in range(g.alpha)], compute),
                          name="inverse_rows")
    inv = te.compute((g.c_out, m, m, g.tiles),
                     lambda co, i, j, p: _transform(A, j, [inv_rows[co, i, b, p] for b in range(g.alpha)], compute),
                     name="inverse")

    def output(n, co, y, x):
        v = inv[co, y % m, x % m, (y // m) * n_w + x // m] + bias[0, co, 0, 0].astype(compute)
        if relu:
            v = tirx.max(v, tirx.const(0, compute))
        return v.astype(storage)

    return te.compute((1, g.c_out, g.h, g.w), output, name="output")


def winograd_primfunc(layer: Layer, m: int, storage: str = "float16", compute: str = "float32"):
    """(data, kpack, bias) -> out, all `storage`; arithmetic in `compute`. A te PrimFunc."""
    from tvm import te  # noqa: PLC0415

    g = Geometry.of(layer, m)
    data = te.placeholder((1, g.c_in, g.h, g.w), storage, name="data")
    kpack = te.placeholder((g.alpha, g.alpha, g.c_in, g.c_out), storage, name="kpack")
    bias = te.placeholder((1, g.c_out, 1, 1), storage, name="bias")
    V = input_transform(g, data, compute)
    out = inverse_transform(g, batched_gemm(g, V, kpack, compute), bias, layer.relu, storage, compute)
    return te.create_prim_func([data, kpack, bias, out])


def direct_primfunc(layer: Layer, storage: str = "float16", compute: str = "float32"):
    """The direct conv (any kernel, stride and groups) with storage-dtype tensors and
    compute-dtype arithmetic, with the block names of the Relax-legalized conv (pad_temp,
    conv2d_nchw or group_conv2d_nchw, ...) so the direct or grouped template applies."""
    from tvm import te, topi  # noqa: PLC0415

    data = te.placeholder(layer.in_shape, storage, name="data")
    weight = te.placeholder(layer.weight_shape, storage, name="weight")
    bias = te.placeholder((1, layer.out_channels, 1, 1), storage, name="bias")
    x = topi.cast(data, compute) if compute != storage else data
    k = topi.cast(weight, compute) if compute != storage else weight
    conv = topi.nn.conv(x, k, layer.stride, layer.padding, 1, layer.groups, "NCHW", "OIHW", out_dtype=compute)
    y = topi.add(conv, topi.cast(bias, compute))
    if layer.activation == RELU:
        y = topi.nn.relu(y)
    elif layer.activation == RELU6:
        y = topi.clip(y, 0.0, 6.0)
    out = topi.cast(y, storage)
    return te.create_prim_func([data, weight, bias, out])


# ---------------------------------------------------------------- schedules

def schedule_winograd(sch, p: WinogradParams, simd: int = 8):
    """Apply the Winograd schedule in place to a tvm.s_tir.Schedule of winograd_primfunc."""
    _schedule_input_transform(sch, simd)
    _schedule_bgemm(sch, p, simd)
    _schedule_inverse(sch, simd)
    return sch


def _schedule_input_transform(sch, simd: int) -> None:
    """Parallel over (ci, tile row); per tile row, the row pass (along the image row, vector
    by vector) feeds the column pass (one vector of tiles at a time, all alpha^2 outputs
    straight-line so each strided gather is loaded once and shared)."""
    pack = sch.get_sblock("data_pack")
    e, nu, c, p = sch.get_loops(pack)
    ty, tx = sch.split(p, [None, _tiles_per_row(sch)])
    tx_o, tx_i = _split_vector(sch, tx, simd)
    sch.reorder(c, ty, tx_o, e, nu, tx_i)
    outer = sch.fuse(c, ty)
    sch.parallel(outer)
    sch.unroll(e)
    sch.unroll(nu)
    sch.vectorize(tx_i)
    rows = sch.get_sblock("rows")
    sch.compute_at(rows, outer, preserve_unit_loops=True)
    re, rx = sch.get_loops(rows)[-2:]
    rx_o, rx_i = _split_vector(sch, rx, simd)
    sch.reorder(rx_o, re, rx_i)
    sch.unroll(re)
    sch.vectorize(rx_i)


def _split_vector(sch, loop, simd: int):
    """(outer, inner): inner one vector long where the extent allows, the whole loop where it
    is shorter than a vector, else 1 (a vector loop must not be thousands of lanes)."""
    extent = int(sch.get(loop).extent)
    factor = simd if extent % simd == 0 else extent if extent < simd else 1
    return sch.split(loop, [None, factor])


def _tiles_per_row(sch) -> int:
    rows = sch.get(sch.get_sblock("rows"))
    w = int(rows.iter_vars[3].dom.extent)
    m = int(rows.iter_vars[2].dom.extent) - 2
    return -(-w // m)


def _schedule_bgemm(sch, p: WinogradParams, simd: int) -> None:
    gemm = sch.get_sblock("bgemm")
    acc = sch.cache_write(gemm, 0, "local")
    e, nu, co, t, rc = sch.get_loops(gemm)
    coo, coi = sch.split(co, [None, p.co_t])
    to, ti = sch.split(t, [None, p.p_t])
    sch.reorder(e, nu, to, coo, rc, coi, ti)
    # V rows of one (eps, nu) are `tiles` floats apart, often a multiple of 4 KiB: read in
    # place, the p_t-wide column block of V maps to a single L1 set and thrashes. Copy it to a
    # contiguous block once per tile block, reused by every channel tile.
    packed = sch.cache_read(gemm, 0, "global")
    sch.compute_at(packed, to, preserve_unit_loops=True)
    sch.vectorize(sch.get_loops(packed)[-1])
    sch.reverse_compute_at(acc, coo, preserve_unit_loops=True)
    outer = sch.fuse(e, nu)
    sch.parallel(outer)
    sch.unroll(coi)
    sch.vectorize(ti)
    sch.vectorize(sch.get_loops(acc)[-1])
    init = sch.decompose_reduction(gemm, rc)
    sch.vectorize(sch.get_loops(init)[-1])
    wide = sch.get_sblock("kpack_wide")
    if p.k_cache:  # widen this (eps, nu)'s kpack once: broadcasts then load fp32 directly
        sch.compute_at(wide, outer, preserve_unit_loops=True)
        sch.vectorize(_split_vector(sch, sch.get_loops(wide)[-1], simd)[1])
    else:  # widen on every use, inside the GEMM loop
        sch.compute_inline(wide)


def _schedule_inverse(sch, simd: int) -> None:
    """Parallel over (co, tile row); per vector of tiles, both passes of A^T M A straight-line
    in registers, then the output row (+ bias, ReLU, fp16) vector by vector."""
    out = sch.get_sblock("output")
    inv = sch.get_sblock("inverse")
    inv_rows = sch.get_sblock("inverse_rows")
    m = int(sch.get(inv).iter_vars[1].dom.extent)
    n, co, y, x = sch.get_loops(out)
    ty, _ = sch.split(y, [None, m])
    outer = sch.fuse(n, co, ty)
    sch.parallel(outer)
    x_o, x_i = _split_vector(sch, x, simd)
    sch.vectorize(x_i)
    sch.compute_at(inv, outer, preserve_unit_loops=True)
    i, j, p = sch.get_loops(inv)[-3:]
    p_o, p_i = _split_vector(sch, p, simd)
    sch.reorder(p_o, i, j, p_i)
    sch.unroll(i)
    sch.unroll(j)
    sch.vectorize(p_i)
    sch.compute_at(inv_rows, p_o, preserve_unit_loops=True)
    i, b, p = sch.get_loops(inv_rows)[-3:]
    sch.unroll(i)
    sch.unroll(b)
    sch.vectorize(p)


def schedule_kernel(sch, params: KernelParams, simd: int = 8):
    if isinstance(params, DirectParams):
        _inline_casts(sch)
        if isinstance(params.conv, GroupedParams):
            return schedule_grouped(sch, params.conv)
        return schedule_conv(sch, params.conv)
    return schedule_winograd(sch, params, simd)


def _inline_casts(sch) -> None:
    """The input and bias casts are read where they are used (the padding, the epilogue): no
    extra pass, and the direct template sees the block chain it expects. The weights are
    widened once per call instead (a few thousand values): inlined, every broadcast in the
    conv loop would convert a half."""
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        stmt = sch.get(block)
        if stmt.name_hint in ("pad_temp", "conv2d_nchw", conv_grouped.BLOCK) or not sch.get_consumers(block):
            continue
        if any(region.source.name == "weight" for region in stmt.reads):
            sch.vectorize(_split_vector(sch, sch.fuse(*sch.get_loops(block)), 8)[1])
            continue
        sch.compute_inline(block)


# ---------------------------------------------------------------- search space

def winograd_space(layer: Layer, simd: int = 8) -> list[WinogradParams]:
    """Tile sizes that divide the plane, and GEMM register tiles of 6 to 16 accumulators.
    Most promising first: F(4x4), then 8 accumulators with 2 vectors of tiles (the best tile
    on every large layer measured here). Empty for a conv Winograd F(m x m, 3x3) does not
    compute here: anything but 3x3, stride 1, same padding, one group, none/ReLU."""
    if not winograd_applies(layer):
        return []
    _, c_out, h, w = layer.out_shape
    space = []
    for m in TILE_SIZES:
        if h % m or w % m:
            continue
        tiles = (h // m) * (w // m)
        widths = [t for t in (simd, 2 * simd, 3 * simd, 4 * simd) if tiles % t == 0] or [tiles]
        for p_t in widths:
            vecs = max(1, p_t // simd)
            for co_t in (f for f in (2, 3, 4, 6, 8, 12, 16) if c_out % f == 0):
                if 6 <= co_t * vecs <= 16 or (c_out < 6 and co_t == c_out):
                    space.append(WinogradParams(m, co_t, p_t))
    return sorted(space, key=lambda q: (TILE_SIZES.index(q.m), abs(q.co_t * max(1, q.p_t // simd) - 8),
                                        abs(q.p_t - 2 * simd)))


def winograd_applies(layer: Layer) -> bool:
    return is_study_conv(layer)


def direct_space(layer: Layer, simd: int = 8, direct: int = 6, registers: int = 16) -> list[DirectParams]:
    """The `direct` most promising tiles of the direct template (for a register file of
    `registers` vectors), or the grouped template's."""
    from harness.tuning.tasks import ranked  # noqa: PLC0415

    if layer.groups > 1:
        return [DirectParams(c) for c in conv_grouped.search_space(layer, simd)]
    return [DirectParams(c) for c in ranked(search_space(layer, simd, registers), registers)[:direct]]


def kernel_space(layer: Layer, simd: int = 8, direct: int = 6, registers: int = 16) -> list[KernelParams]:
    """Winograd candidates and the `direct` most promising direct tiles; the direct ones
    first where a side has few channels (the 3-channel input and head), where they win."""
    direct_tiles = direct_space(layer, simd, direct, registers)
    if min(layer.in_channels, layer.out_channels) < 16:
        return [*direct_tiles, *winograd_space(layer, simd)]
    return [*winograd_space(layer, simd), *direct_tiles]


def default_params(layer: Layer, simd: int = 8, registers: int = 16) -> KernelParams:
    """Untuned: Winograd F(4x4) where the layer is Winograd-shaped, else the direct template
    (the grouped one for grouped and depthwise convs)."""
    if layer.in_channels >= 16 and layer.out_channels >= 16:
        space = winograd_space(layer, simd)
        if space:
            return space[0]
    if layer.groups > 1:
        return DirectParams(conv_grouped.default_params(layer, simd))
    from harness.tuning.conv_direct import default_params as direct_default  # noqa: PLC0415

    return DirectParams(direct_default(layer, simd, registers))
