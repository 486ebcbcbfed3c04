"""`torch`: stock PyTorch eager, the reference a user would otherwise pick.

On x86 its convolutions go to oneDNN (mkldnn); on ARM to its own kernels or XNNPACK.
"""
from __future__ import annotations

import torch

from harness.builds.base import Build, BuildContext
from harness.builds.eager import EagerExecutable
from harness.model.layers import CONV
from harness.model.tablenet import TableNet


def conv_backend() -> str:
    return "onednn" if torch.backends.mkldnn.is_available() else "aten"


class TorchBuild(Build):
    name = "torch"
    description = "stock PyTorch eager (oneDNN convolutions on x86)"

    def compile(self, ctx: BuildContext) -> EagerExecutable:
        torch.set_num_threads(ctx.threads)
        net = TableNet(ctx.table, ctx.weights)
        impls = {layer.id: conv_backend() if layer.op == CONV else "aten" for layer in ctx.table}
        return EagerExecutable(ctx.table, net.layer_fns(), impls)
