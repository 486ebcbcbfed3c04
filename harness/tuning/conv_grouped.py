"""A schedule for TVM's grouped and depthwise convolutions (topi's group_conv2d_nchw).

The direct template (conv_direct.py) tiles output channels against a reduction over every
input channel; a depthwise conv reads one input channel per output channel, so its register
tile is a run of output columns only. The template works on the PrimFunc FuseTIR makes of
one grouped conv layer (pad_temp -> group_conv2d_nchw -> T_add [-> ReLU / clip]):

    parallel over (channel, output row)
      for column tile:                         tx columns, a whole number of vectors
        acc[tx] = 0
        for ci in the group, kh, kw (kh, kw unrolled):
          acc[x] += in[ci, y*s+kh, x*s+kw] * w[f, ci, kh, kw]   (w broadcast)
        out = act(acc + bias)                   (epilogue fused per tile)

with the padding a parallel pass of its own. The knob is tx; rows of fewer columns than a
vector are computed whole (a vector loop of the row's length).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from harness.model.layers import Layer
from harness.tuning.conv_direct import fold_epilogue

BLOCK = "group_conv2d_nchw"


@dataclass(frozen=True)
class GroupedParams:
    tx: int  # output columns per register tile (the vectorised axis)

    def to_json(self) -> dict[str, Any]:
        return {"template": "grouped", **asdict(self)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> GroupedParams:
        return cls(int(d["tx"]))


def search_space(layer: Layer, simd_lanes: int = 8) -> list[GroupedParams]:
    """Column tiles of one to four vectors that divide the row; the whole row if none does."""
    width = layer.out_shape[3]
    tiles = [t for t in (simd_lanes, 2 * simd_lanes, 4 * simd_lanes, simd_lanes // 2) if t and width % t == 0]
    return [GroupedParams(t) for t in tiles] or [GroupedParams(width)]


def default_params(layer: Layer, simd_lanes: int = 8) -> GroupedParams:
    return search_space(layer, simd_lanes)[0]


def schedule_grouped(sch, params: GroupedParams):
    """Apply the template in place to a tvm.s_tir.Schedule of one fused grouped-conv PrimFunc."""
    conv = sch.get_sblock(BLOCK)
    epilogue = fold_epilogue(sch, conv)
    n, f, y, x, rc, ry, rx = sch.get_loops(conv)
    xo, xi = sch.split(x, [None, params.tx])
    sch.reorder(n, f, y, xo, rc, ry, rx, xi)
    if epilogue is not None:
        sch.reverse_compute_at(epilogue, xo, preserve_unit_loops=True)
        sch.vectorize(sch.get_loops(epilogue)[-1])
    outer = sch.fuse(n, f, y)
    sch.parallel(outer)  # before decompose_reduction, as in the direct template
    sch.unroll(ry)
    sch.unroll(rx)
    sch.vectorize(xi)
    init = sch.decompose_reduction(conv, rc)
    sch.vectorize(sch.get_loops(init)[-1])
    pad = sch.get_sblock("pad_temp")
    sch.parallel(sch.fuse(*sch.get_loops(pad)[:2]))
    return sch
