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

Kernel (NCHW, P = nH x nW tiles of m x m outputs, alpha = m + 2):

    parallel over (ci, tile row ty):                                    input transform
      pad    = fp32(input rows ty*m .. ty*m+alpha)         (zero padding inlined here)
      rows   = B^T . pad                                   (vectorised along the row)
      V[eps, nu, ci, ty*nW + tx] = rows[eps, tx*m ..] . B  (vectorised over tiles tx)
    parallel over (eps, nu, co tile):                                   batched GEMM
      M[eps, nu, co, p] = sum_ci V[eps, nu, ci, p] * kpack[eps, nu, ci, co]
      register tile co_t x p_t (p_t vectorised, kpack broadcast), like the direct template
    parallel over (co, tile row ty):                                    inverse transform
      Y = A^T M A  (vectorised over tiles), then out = fp16(relu(Y + bias)) row by row

Layers where Winograd does not pay (3 input channels, 3 output channels, small planes) can
use the direct template on an fp32 copy of fp16 data instead: the search includes both.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from harness.model.layers import Layer
from harness.tuning.conv_direct import ConvParams, schedule_conv, search_space

WINOGRAD = "winograd"
DIRECT = "direct"
TILE_SIZES = (4, 2, 6)  # F(4x4,3x3) first: F(6x6) loses too much accuracy with fp16 weights


@dataclass(frozen=True)
class WinogradParams:
    m: int  # output tile: F(m x m, 3x3)
    co_t: int  # output channels per GEMM register tile
    p_t: int  # tiles per GEMM register tile (the vectorised axis)
    algo: str = WINOGRAD

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def label(self) -> str:
        return f"F{self.m}x{self.m}"


@dataclass(frozen=True)
class DirectParams:
    conv: ConvParams
    algo: str = DIRECT

    def to_json(self) -> dict[str, Any]:
        return {"algo": DIRECT, **self.conv.to_json()}

    @property
    def label(self) -> str:
        return "direct"


KernelParams = WinogradParams | DirectParams


def params_from_json(d: dict[str, Any]) -> KernelParams:
    if d.get("algo") == DIRECT:
        return DirectParams(ConvParams.from_json(d))
    return WinogradParams(int(d["m"]), int(d["co_t"]), int(d["p_t"]))


# ---------------------------------------------------------------- transforms (topi's matrices)

@lru_cache(maxsize=None)
def transform_matrices(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """topi's Cook-Toom A (alpha x m), B (alpha x alpha), G (alpha x 3) for F(m x m, 3x3)."""
    from tvm.topi.nn.winograd_util import _cook_toom_convolution, _interpolation_points  # noqa: PLC0415

    return tuple(np.asarray(x, dtype=np.float64) for x in _cook_toom_convolution(_interpolation_points(m + 2), m, 3))


def transform_weights(weight: np.ndarray, m: int) -> np.ndarray:
    """OIHW 3x3 weights -> kpack[eps, nu, ci, co] = G w G^T, in fp64 (cast by the caller)."""
    _, _, G = transform_matrices(m)
    return np.einsum("ak,oikl,bl->abio", G, weight.astype(np.float64), G)


def _combine(coeffs: np.ndarray, terms: list) -> Any:
    """sum(c * t) over the non-zero coefficients, with the +-1 multiplications left out."""
    out = None
    for c, t in zip(coeffs, terms):
        if c == 0:
            continue
        term = t if c == 1 else -t if c == -1 else t * float(c)
        out = term if out is None else out + term
    return out


def _transform(matrix: np.ndarray, col, terms: list) -> Any:
    """sum_k matrix[k, col] * terms[k] for a loop variable `col`: one straight-line sum per
    column, selected by `col`. The schedule unrolls `col`, and the select folds away."""
    from tvm import tirx  # noqa: PLC0415

    exprs = [_combine(matrix[:, j], terms) for j in range(matrix.shape[1])]
    out = exprs[-1]
    for j in range(len(exprs) - 2, -1, -1):
        out = tirx.Select(col == j, exprs[j], out)
    return out


# ---------------------------------------------------------------- computes

def winograd_primfunc(layer: Layer, m: int, storage: str = "float16", compute: str = "float32"):
    """(data, kpack, bias) -> out, all `storage`; arithmetic in `compute`. A te PrimFunc."""
    from tvm import te, tirx  # noqa: PLC0415

    _, ci_n, h, w = layer.in_shape
    co_n = layer.out_channels
    alpha = m + 2
    A, B, _ = transform_matrices(m)
    n_h, n_w = -(-h // m), -(-w // m)
    tiles = n_h * n_w
    pad_h, pad_w = n_h * m + 2, n_w * m + 2

    data = te.placeholder((1, ci_n, h, w), storage, name="data")
    kpack = te.placeholder((alpha, alpha, ci_n, co_n), storage, name="kpack")
    bias = te.placeholder((1, co_n, 1, 1), storage, name="bias")

    def padded(c, y, x):
        inside = tirx.all(y >= 1, y <= h, x >= 1, x <= w)
        return tirx.if_then_else(inside, data[0, c, y - 1, x - 1].astype(compute), tirx.const(0, compute))

    pad = te.compute((ci_n, pad_h, pad_w), padded, name="pad")
    rows = te.compute((ci_n, n_h, alpha, pad_w),
                      lambda c, ty, e, x: _transform(B, e, [pad[c, ty * m + a, x] for a in range(alpha)]),
                      name="rows")
    V = te.compute((alpha, alpha, ci_n, tiles),
                   lambda e, nu, c, p: _transform(B, nu, [rows[c, p // n_w, e, (p % n_w) * m + b]
                                                           for b in range(alpha)]),
                   name="data_pack")
    rc = te.reduce_axis((0, ci_n), name="rc")
    M = te.compute((alpha, alpha, co_n, tiles),
                   lambda e, nu, co, p: te.sum(V[e, nu, rc, p] * kpack[e, nu, rc, co].astype(compute), axis=rc),
                   name="bgemm")
    inv_rows = te.compute((co_n, m, alpha, tiles),
                          lambda co, i, b, p: _transform(A, i, [M[a, b, co, p] for a in range(alpha)]),
                          name="inverse_rows")
    inv = te.compute((co_n, m, m, tiles),
                     lambda co, i, j, p: _transform(A, j, [inv_rows[co, i, b, p] for b in range(alpha)]),
                     name="inverse")

    def output(n, co, y, x):
        v = inv[co, y % m, x % m, (y // m) * n_w + x // m] + bias[0, co, 0, 0].astype(compute)
        if layer.relu:
            v = tirx.max(v, tirx.const(0, compute))
        return v.astype(storage)

    out = te.compute((1, co_n, h, w), output, name="output")
    return te.create_prim_func([data, kpack, bias, out])


def direct_primfunc(layer: Layer, storage: str = "float16", compute: str = "float32"):
    """The direct conv with storage-dtype tensors and compute-dtype arithmetic, with the block
    names of the Relax-legalized conv (pad_temp, conv2d_nchw, ...) so the direct template applies."""
    from tvm import te, topi  # noqa: PLC0415

    _, ci_n, h, w = layer.in_shape
    data = te.placeholder((1, ci_n, h, w), storage, name="data")
    weight = te.placeholder((layer.out_channels, ci_n, 3, 3), storage, name="weight")
    bias = te.placeholder((1, layer.out_channels, 1, 1), storage, name="bias")
    x = topi.cast(data, compute) if compute != storage else data
    k = topi.cast(weight, compute) if compute != storage else weight
    y = topi.add(topi.nn.conv2d_nchw(x, k, 1, layer.padding, 1, out_dtype=compute), topi.cast(bias, compute))
    if layer.relu:
        y = topi.nn.relu(y)
    out = topi.cast(y, storage)
    return te.create_prim_func([data, weight, bias, out])


# ---------------------------------------------------------------- schedules

def schedule_winograd(sch, p: WinogradParams, simd: int = 8):
    """Apply the Winograd schedule in place to a tvm.s_tir.Schedule of winograd_primfunc."""
    _schedule_input_transform(sch, simd)
    _schedule_bgemm(sch, p)
    _schedule_inverse(sch, simd)
    return sch


def _vectorize_inner(sch, loop, simd: int):
    """Vectorise a loop by whole vectors where its extent allows, else as it is."""
    extent = int(sch.get(loop).extent)
    if extent > simd and extent % simd == 0:
        loop = sch.split(loop, [None, simd])[1]
    sch.vectorize(loop)


def _schedule_input_transform(sch, simd: int) -> None:
    pack = sch.get_sblock("data_pack")
    e, nu, c, p = sch.get_loops(pack)
    tiles_per_row = _tiles_per_row(sch)
    ty, tx = sch.split(p, [None, tiles_per_row])
    sch.reorder(c, ty, e, nu, tx)
    outer = sch.fuse(c, ty)
    sch.parallel(outer)
    sch.unroll(e)
    sch.unroll(nu)
    _vectorize_inner(sch, tx, simd)
    rows = sch.get_sblock("rows")
    sch.compute_at(rows, outer, preserve_unit_loops=True)
    _, re, rx = sch.get_loops(rows)[:1] + sch.get_loops(rows)[-2:]
    sch.unroll(re)
    _vectorize_inner(sch, rx, simd)
    pad = sch.get_sblock("pad")
    sch.compute_at(pad, outer, preserve_unit_loops=True)


def _tiles_per_row(sch) -> int:
    rows = sch.get(sch.get_sblock("rows"))
    pad_w = int(rows.iter_vars[3].dom.extent)
    alpha = int(rows.iter_vars[2].dom.extent)
    return (pad_w - 2) // (alpha - 2)


def _schedule_bgemm(sch, p: WinogradParams) -> None:
    gemm = sch.get_sblock("bgemm")
    acc = sch.cache_write(gemm, 0, "local")
    e, nu, co, t, rc = sch.get_loops(gemm)
    coo, coi = sch.split(co, [None, p.co_t])
    to, ti = sch.split(t, [None, p.p_t])
    sch.reorder(e, nu, to, coo, rc, coi, ti)
    sch.reverse_compute_at(acc, coo, preserve_unit_loops=True)
    outer = sch.fuse(e, nu)
    sch.parallel(outer)
    sch.unroll(coi)
    sch.vectorize(ti)
    sch.vectorize(sch.get_loops(acc)[-1])
    init = sch.decompose_reduction(gemm, rc)
    sch.vectorize(sch.get_loops(init)[-1])


def _schedule_inverse(sch, simd: int) -> None:
    out = sch.get_sblock("output")
    inv = sch.get_sblock("inverse")
    inv_rows = sch.get_sblock("inverse_rows")
    m = int(sch.get(inv).iter_vars[1].dom.extent)
    n, co, y, x = sch.get_loops(out)
    ty, yi = sch.split(y, [None, m])
    outer = sch.fuse(n, co, ty)
    sch.parallel(outer)
    _vectorize_inner(sch, x, simd)
    for block in (inv, inv_rows):
        sch.compute_at(block, outer, preserve_unit_loops=True)
        loops = sch.get_loops(block)
        for loop in loops[-3:-1]:
            sch.unroll(loop)
        _vectorize_inner(sch, loops[-1], simd)


def schedule_kernel(sch, params: KernelParams, simd: int = 8):
    if isinstance(params, DirectParams):
        _inline_casts(sch)
        return schedule_conv(sch, params.conv)
    return schedule_winograd(sch, params, simd)


def _inline_casts(sch) -> None:
    """The direct compute's input/weight casts read inside the conv loop (no extra pass)."""
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        name = sch.get(block).name_hint
        if name.startswith("T_cast") and sch.get_consumers(block) and name != "pad_temp":
            consumers = [sch.get(c).name_hint for c in sch.get_consumers(block)]
            if "pad_temp" in consumers or "conv2d_nchw" in consumers:
                sch.compute_inline(block)


# ---------------------------------------------------------------- search space

def winograd_space(layer: Layer, simd: int = 8) -> list[WinogradParams]:
    _, c_out, h, w = layer.out_shape
    space = []
    for m in TILE_SIZES:
        if h % m or w % m:
            continue
        tiles = (h // m) * (w // m)
        widths = [t for t in (simd, 2 * simd, 3 * simd) if tiles % t == 0] or [tiles]
        for p_t in widths:
            vecs = max(1, p_t // simd)
            for co_t in (f for f in (2, 3, 4, 6, 8, 12) if c_out % f == 0):
                if 6 <= co_t * vecs <= 14:
                    space.append(WinogradParams(m, co_t, p_t))
    return sorted(space, key=lambda q: (TILE_SIZES.index(q.m), abs(q.co_t * max(1, q.p_t // simd) - 12), -q.p_t))


def kernel_space(layer: Layer, simd: int = 8, direct: int = 3) -> list[KernelParams]:
    """Winograd candidates first, then the `direct` most promising direct tiles."""
    from harness.tuning.tasks import ranked  # noqa: PLC0415

    return [*winograd_space(layer, simd),
            *(DirectParams(c) for c in ranked(search_space(layer, simd))[:direct])]


def default_params(layer: Layer, simd: int = 8) -> KernelParams:
    """Untuned: Winograd F(4x4) where the layer is Winograd-shaped, else the direct template."""
    if layer.in_channels >= 16 and layer.out_channels >= 16:
        space = winograd_space(layer, simd)
        if space:
            return space[0]
    from harness.tuning.conv_direct import default_params as direct_default  # noqa: PLC0415

    return DirectParams(direct_default(layer, simd))
