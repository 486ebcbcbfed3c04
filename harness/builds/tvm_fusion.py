"""The UNet study's fusion in the TVM builds: layers computed inside a convolution's kernel.

Found from the layer table's graph (which layer reads which), for any network:
- a pool after a conv: a MaxPool (op maxpool_relu, or a plain maxpool) whose windows tile its
  input exactly (kernel = stride, no padding) and whose only input is a direct (one-group) conv
  that TVM's direct template runs. One kernel computes the conv and pools each row tile of it
  right after computing it (conv_direct.compute_tail), so the pool reads the conv's output from
  cache. The kernel still writes the conv's own map when other layers read it too (the UNet's
  skip, read by the decoder's resize): its function returns both; otherwise only the pool's.
  The tile must hold whole windows (conv_direct.fits_pool): the tuned tile if it does, else the
  fitting candidate of the tuning record with the lowest median, else the template's default
  among the fitting tiles (untuned); no tile fits: no fusion.
- a resize before a conv: a ResizeNearest+Add+ReLU (op resize_add_relu) whose only reader is
  such a conv. One kernel computes conv(relu(resize(x) + skip)); the resize, add and ReLU are
  inlined into the template's padding (conv_direct.inline_prologue), so the upsampled sum is
  never written out.

The absorbed layer has no kernel of its own: the VM times it 0, its label is
`tvm:fused into <conv>` and the conv's `<label> (+<ids> fused in)`, as ONNX Runtime's fusions
are reported (base.absorber_label, fused_into_label, fused_note).

Which fusions a build makes is its option "fuse": "pools" (the default), "all" (or true) for
both, "none" (or false) for neither: every layer its own kernel. Why pools only by default:
measured on the Zen 5 (scripts/fusion_saving.py, fused and unfused interleaved in one
process, tuned tiles), the pool fusions are even (-1.5 % to +2.9 % per group) while the resize
fusions cost 4-19 % per group (-1.6 ms end to end): the padding recomputes the upsampled sum
for each row tile's halo rows, in scalar code, where the separate layer is one vectorised pass
whose output stays in this machine's caches. On a board with small caches the balance may
turn: measure it there with the same script before choosing "all".
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from harness.builds.base import absorber_label, fused_into_label, fused_note
from harness.errors import UserError
from harness.model.layers import MAXPOOL, MAXPOOL_RELU, RESIZE_ADD_RELU, Layer, LayerTable
from harness.tuning.conv_direct import ConvParams, fits_pool, search_space
from harness.tuning.database import TuningDatabase

LABEL_PREFIX = "tvm"
REFIT_WHY = {True: "the fitting candidate of its tuning record with the lowest median",
             False: "the template's default: no fitting candidate measured"}


@dataclass(frozen=True)
class FusedGroup:
    """One conv's kernel and the layers fused into it."""

    conv: str  # the conv's id: the kernel is named, timed and reported under it
    before: str | None = None  # a resize_add_relu computing the conv's input
    after: str | None = None  # a pool of the conv's output
    keep_conv: bool = False  # other layers read the conv's own output: the kernel writes it too

    @property
    def absorbed(self) -> list[str]:
        return [lid for lid in (self.before, self.after) if lid]


POOL, RESIZE = "pool", "resize"  # a pool after a conv; a resize+add+relu before one
FUSE_CHOICES = {"all": frozenset({POOL, RESIZE}), True: frozenset({POOL, RESIZE}),
                "pools": frozenset({POOL}), "none": frozenset(), False: frozenset()}
DEFAULT_FUSE = "pools"  # the module docstring says why


def fusion_kinds(options: dict[str, Any]) -> frozenset[str]:
    """The fusions the build option "fuse" asks for ("pools" unless set)."""
    value = options.get("fuse", DEFAULT_FUSE)
    if not isinstance(value, (str, bool)) or value not in FUSE_CHOICES:
        raise UserError(f'build option "fuse": {value!r} is not one of "all", "pools", "none" (or true, false)')
    return FUSE_CHOICES[value]


def readers(table: LayerTable) -> dict[str, list[str]]:
    """Layer id -> the ids of the layers that read its output, in table order."""
    out: dict[str, list[str]] = {layer.id: [] for layer in table}
    for layer in table:
        for src in layer.inputs:
            if src in out:
                out[src].append(layer.id)
    return out


def tiles_input(layer: Layer) -> bool:
    """A max pool with non-overlapping windows that cover its input exactly: a row tile of the
    conv before it pools on its own."""
    if layer.op not in (MAXPOOL_RELU, MAXPOOL) or layer.kernel is None:
        return False
    s = layer.stride
    _, _, h, w = layer.in_shape
    return layer.kernel == (s, s) and layer.padding == 0 and layer.out_shape[2:] == (h // s, w // s) \
        and h % s == 0 and w % s == 0


def find_groups(table: LayerTable, direct: set[str],
                kinds: frozenset[str] = FUSE_CHOICES["all"]) -> dict[str, FusedGroup]:
    """Conv id -> its group, for the convs in `direct` (those TVM's direct template runs) that a
    pool follows or a resize_add_relu feeds (the module docstring's patterns), of `kinds`."""
    reads = readers(table)
    groups: dict[str, FusedGroup] = {}
    for layer in table:
        if RESIZE in kinds and layer.op == RESIZE_ADD_RELU and len(reads[layer.id]) == 1 \
                and reads[layer.id][0] in direct:
            conv = reads[layer.id][0]
            groups[conv] = replace(groups.get(conv, FusedGroup(conv)), before=layer.id)
        elif POOL in kinds and tiles_input(layer) and layer.inputs[0] in direct:
            conv = layer.inputs[0]
            if conv in groups and groups[conv].after:
                continue  # two pools of one conv: the first is fused, the second reads the conv's map
            keep = reads[conv] != [layer.id] or conv == table.output_id
            groups[conv] = replace(groups.get(conv, FusedGroup(conv)), after=layer.id, keep_conv=keep)
    return groups


def pool_tile(layer: Layer, stride: int, db: TuningDatabase, lanes: int,
              registers: int) -> tuple[ConvParams, bool] | None:
    """The tile for `layer` with a pool of `stride` fused after it, when the build's own choice
    does not fit: the fitting measured candidate with the lowest median sample (True: tuned),
    else the template's default among fitting tiles (False: untuned); None if no tile fits."""
    record = db.records.get(layer.workload_key())
    fitting = [c for c in (record.candidates if record else []) if c.ok
               and fits_pool(ConvParams.from_json(c.params), stride)]
    if fitting:
        return ConvParams.from_json(min(fitting, key=lambda c: c.median_ms).params), True
    space = [p for p in search_space(layer, lanes, registers) if fits_pool(p, stride)]
    rows_outer = [p for p in space if p.order == "yfx_pad"]  # as default_params prefers
    return ((rows_outer or space)[0], False) if space else None


@dataclass
class Fusion:
    """The groups a build fuses (none with the option off)."""

    groups: dict[str, FusedGroup]
    refitted: dict[str, str] = field(default_factory=dict)  # conv id -> its new tile, and why

    @property
    def absorbed(self) -> dict[str, str]:
        """Absorbed layer id -> the conv whose kernel computes it."""
        return {lid: g.conv for g in self.groups.values() for lid in g.absorbed}

    def pool_stride(self, table: LayerTable, conv_id: str) -> int:
        group = self.groups.get(conv_id)
        return table[group.after].stride if group and group.after else 0

    def label(self, impls: dict[str, str]) -> dict[str, str]:
        """The impl labels with the fusion said: `tvm (+enc0.pool fused in)`, `tvm:fused into enc0.conv2`."""
        out = dict(impls)
        for group in self.groups.values():
            out[group.conv] = absorber_label(impls[group.conv], group.absorbed)
            for lid in group.absorbed:
                out[lid] = fused_into_label(LABEL_PREFIX, group.conv)
        return out

    @property
    def notes(self) -> list[str]:
        notes = [fused_note("TVM", self.absorbed)] if self.groups else []
        if self.refitted:
            notes.append("conv tiles refitted to hold whole pooling windows per parallel tile: "
                         + ", ".join(f"{cid} {why}" for cid, why in self.refitted.items()))
        return notes


def plan_fusion(table: LayerTable, choices: dict[str, Any], impls: dict[str, str], db: TuningDatabase,
                lanes: int, registers: int, untuned: str,
                kinds: frozenset[str] = FUSE_CHOICES["all"]) -> Fusion:
    """The groups among the convs TVM's direct template runs (`choices` holding ConvParams),
    with the tiles of convs followed by a pool fitted to it: `choices` and `impls` (the base
    label, `tvm` or `tvm` + `untuned`) are updated in place; a conv with no fitting tile keeps
    its pool apart."""
    direct = {lid for lid, c in choices.items() if isinstance(c, ConvParams)}  # grouped: GroupedParams
    groups = find_groups(table, direct, kinds)
    refitted: dict[str, str] = {}
    for conv_id, group in list(groups.items()):
        if not group.after:
            continue
        stride = table[group.after].stride
        if fits_pool(choices[conv_id], stride):
            continue
        tile = pool_tile(table[conv_id], stride, db, lanes, registers)
        if tile is None:
            groups[conv_id] = replace(group, after=None, keep_conv=False)
            continue
        choices[conv_id], tuned = tile
        impls[conv_id] = LABEL_PREFIX if tuned else LABEL_PREFIX + untuned
        refitted[conv_id] = f"{choices[conv_id].key} ({REFIT_WHY[tuned]})"
    return Fusion({cid: g for cid, g in groups.items() if g.absorbed}, refitted)
