"""A schedule template for TVM's direct 3x3 convolution, and its search space.

MetaSchedule's generic search spent most of its time here in 30-second builder timeouts, so
the `tvm` build uses a template written for this one operator, with a small search over its
knobs. The template works on the PrimFunc that FuseTIR makes of one conv layer
(blocks pad_temp -> conv2d_nchw -> T_add [-> compute (ReLU)]), NCHW/OIHW:

    parallel over row tiles (and optionally channel/column tiles)
      [pad the rows this tile needs]                       order "yfx_pad"
      for channel tile, column tile:
        acc[tf][ty][tx] = 0
        for ci, kh, kw (kw unrolled):
          acc[f][y][x] += in[ci, y+kh, x+kw] * w[f, ci, kh, kw]   (tx-wide FMAs, w broadcast)
        out = relu(acc + bias)                             (epilogue fused per tile)

tf x ty x (tx / simd) accumulators stay in vector registers: the knobs are the register tile
and the loop order. Non-divisible tiles work through predicates but run 2-4x slower, so the
space only holds divisors.

The `tvm` builds fuse neighbouring layers into a conv's PrimFunc (harness/builds/tvm_fusion.py),
and the template takes them as they come:
- a prologue (ResizeNearest+Add+ReLU before the conv): elementwise blocks feeding pad_temp,
  inlined into it (inline_prologue), so the padding is computed straight from the coarse
  map and the skip and the upsampled sum is never written (order yfx_pad pads per row tile,
  recomputing the halo rows; the other orders pad the whole map in one pass first);
- a pooled tail (MaxPool[+ReLU] after the conv): blocks after the epilogue, computed in the
  parallel loop right after the conv tile that wrote their rows (compute_tail), so they read
  the conv's output from cache: per row tile (yfx_pad), per row x channel x column tile (fyx,
  yfx). A tile must hold whole pooling windows: `fits_pool`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from harness.model.layers import Layer

ORDERS = ("fyx", "yfx", "yfx_pad")


@dataclass(frozen=True)
class ConvParams:
    tf: int  # output channels per register tile
    ty: int  # output rows per register tile
    tx: int  # output columns per register tile (the vectorised axis)
    order: str  # "fyx": channel tiles outermost; "yfx": row tiles outermost; "yfx_pad": same,
    #             padding computed per row tile and parallel over rows only

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ConvParams:
        return cls(int(d["tf"]), int(d["ty"]), int(d["tx"]), str(d["order"]))

    @property
    def key(self) -> str:
        return f"tf{self.tf}_ty{self.ty}_tx{self.tx}_{self.order}"


def max_accumulators(registers: int) -> int:
    """Accumulators a register tile may hold: all vector registers but an input vector and a
    broadcast weight (14 of AVX2's 16, 30 of AVX-512's or AArch64's 32)."""
    return registers - 2


def row_tiles(registers: int) -> tuple[int, ...]:
    """Output rows per tile. 8 only with 32 registers: a narrow file holds 8 rows of one
    vector at most, and none of them shares a weight broadcast with another channel."""
    return (1, 2, 4, 8) if registers >= 32 else (1, 2, 4)


def search_space(layer: Layer, simd_lanes: int = 8, registers: int = 16) -> list[ConvParams]:
    """Register tiles that fit: between 8 and max_accumulators vector accumulators where the
    layer is big enough, fewer where it is not (e.g. 3 output channels in the head). Measured
    on a Zen 5 (AVX-512, 32 zmm): 16 accumulators (tf4_ty2_tx32) ran enc1.conv2 9 % faster than
    the best of 8-14, so the bound follows the register file rather than AVX2's 16."""
    _, c_out, h, w = layer.out_shape
    widths = [t for t in (simd_lanes, 2 * simd_lanes, 3 * simd_lanes, 4 * simd_lanes) if w % t == 0] or [w]
    max_acc = max_accumulators(registers)
    space = []
    for tx in widths:
        vecs = max(1, tx // simd_lanes)
        for ty in (t for t in row_tiles(registers) if h % t == 0):
            most = min(max_acc, c_out * ty * vecs)
            least = min(8, most)
            for tf in (f for f in range(1, min(c_out, 16) + 1) if c_out % f == 0):
                if least <= tf * ty * vecs <= most:
                    space += [ConvParams(tf, ty, tx, order) for order in ORDERS]
    return space


def default_params(layer: Layer, simd_lanes: int = 8, registers: int = 16) -> ConvParams:
    """What an untuned build uses: the first tile of the space, rows outermost."""
    space = [p for p in search_space(layer, simd_lanes, registers) if p.order == "yfx_pad"]
    return space[0] if space else ConvParams(1, 1, layer.out_shape[3], "yfx")


def fits_pool(params: ConvParams, stride: int) -> bool:
    """Can a pool of this stride (non-overlapping windows) follow the conv per parallel tile?
    Each tile of the parallel loop must hold whole windows: ty rows always, and tx columns where
    the parallel loop also tiles the columns (orders fyx and yfx)."""
    return params.ty % stride == 0 and (params.order == "yfx_pad" or params.tx % stride == 0)


def schedule_conv(sch, params: ConvParams, pool_stride: int = 0):
    """Apply the template in place to a tvm.s_tir.Schedule of one fused conv PrimFunc.
    `pool_stride`: the stride of the pool fused after the conv (0: none), which the tile must fit."""
    conv = sch.get_sblock("conv2d_nchw")
    inline_prologue(sch)
    epilogue = fold_epilogue(sch, conv)
    tail = tail_blocks(sch, epilogue or conv)
    check_tail(tail, params, pool_stride)
    n, f, y, x, rc, ry, rx = sch.get_loops(conv)
    fo, fi = sch.split(f, [None, params.tf])
    yo, yi = sch.split(y, [None, params.ty])
    xo, xi = sch.split(x, [None, params.tx])
    if params.order == "fyx":
        sch.reorder(n, fo, yo, xo, rc, ry, rx, fi, yi, xi)
    else:
        sch.reorder(n, yo, fo, xo, rc, ry, rx, fi, yi, xi)
    if epilogue is not None:
        sch.reverse_compute_at(epilogue, xo, preserve_unit_loops=True)
        sch.vectorize(sch.get_loops(epilogue)[-1])
    # parallel and vectorize must come before decompose_reduction: the parallel check needs
    # the compact dataflow that the split init/update pair no longer has.
    if params.order == "fyx":
        outer = sch.fuse(n, fo, yo, xo)
    elif params.order == "yfx":
        outer = sch.fuse(n, yo, fo, xo)
    else:
        outer = sch.fuse(n, yo)
    sch.parallel(outer)
    compute_tail(sch, tail, outer)
    sch.unroll(rx)
    sch.unroll(fi)
    sch.unroll(yi)
    sch.vectorize(xi)
    init = sch.decompose_reduction(conv, rc)
    sch.vectorize(sch.get_loops(init)[-1])
    pad = sch.get_sblock("pad_temp")
    if params.order == "yfx_pad":
        sch.compute_at(pad, outer, preserve_unit_loops=True)
    else:
        sch.parallel(sch.fuse(*sch.get_loops(pad)[:2]))
    return sch


def is_reduction(sch, block) -> bool:
    return any(int(iv.iter_type) != 0 for iv in sch.get(block).iter_vars)  # 0: data-parallel


def fold_epilogue(sch, conv):
    """Inline the elementwise chain after the conv (bias add, activation) into its last block,
    which writes the conv's value; return that block (None if the conv writes it). The chain
    ends at a block no one reads (the function's output) or one a reduction reads (a fused
    pool: the tail, which may read it from an output of the function too)."""
    block = conv
    while True:
        consumers = sch.get_consumers(block)
        if not consumers:
            return None if block == conv else block
        if len(consumers) != 1:
            raise ValueError("the conv epilogue is not a chain")
        nxt = consumers[0]
        after = sch.get_consumers(nxt)
        if not after or any(is_reduction(sch, b) for b in after):
            return nxt
        sch.compute_inline(nxt)


def inline_prologue(sch) -> None:
    """Inline every block computing the conv's input (a fused ResizeNearest+Add+ReLU) into
    pad_temp, nearest first, so the template pads straight from the layer before's inputs."""
    pad = sch.get_sblock("pad_temp")
    while producers := sch.get_producers(pad):
        for block in producers:
            sch.compute_inline(block)


def tail_blocks(sch, last) -> list:
    """The blocks after the conv's last epilogue block (a fused pool and its ReLU), in order."""
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    names = [sch.get(b).name_hint for b in blocks]
    return blocks[names.index(sch.get(last).name_hint) + 1:]


def check_tail(tail: list, params: ConvParams, pool_stride: int) -> None:
    """Refuse a tile that cannot hold whole windows: TVM would still schedule it, splitting each
    window's max between two tiles, which run in parallel (a race, right or wrong by luck)."""
    if tail and not pool_stride:
        raise ValueError("the conv PrimFunc has blocks after its epilogue (a fused pool): give its stride")
    if tail and not fits_pool(params, pool_stride):
        raise ValueError(f"tile {params.key} does not hold whole {pool_stride}x{pool_stride} pooling windows")


def compute_tail(sch, tail: list, outer) -> None:
    """Each tail block per parallel tile, after the conv tile that wrote the rows it reads."""
    for block in tail:
        sch.reverse_compute_at(block, outer, preserve_unit_loops=True)
