"""An Executable over a compiled Relax module, timed per layer with the VM's instrument hook.

The Relax VM has no profiler; `set_instrument(fn)` calls fn before and after every call the VM
makes. Layer functions are named after layer ids (see tvm_relax), so each timing maps to a
layer id directly. A layer fused into a conv's kernel (tvm_fusion) has no call of its own: it
is timed 0 and the conv's call times the whole kernel. VM builtins (allocation, shape checks)
are not layers and only count in the end-to-end time. Two VMs share the executable: the plain
one, used for end-to-end samples, never has an instrument installed, so it pays no callback
overhead.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from harness.builds.tvm_relax import layer_id_of
from harness.runner.measure import Clock


def tvm_threads() -> int:
    import tvm  # noqa: PLC0415

    return int(tvm.get_global_func("runtime.NumThreads")())


class VMExecutable:
    def __init__(self, executable: Any, params: list[np.ndarray], layer_ids: list[str],
                 impls: dict[str, str], external: dict[str, str] | None = None,
                 keepalive: Any = None, notes: list[str] | None = None,
                 tuning: list[dict[str, Any]] | None = None, absorbed: dict[str, str] | None = None):
        import tvm  # noqa: PLC0415
        # tvm.runtime.vm, not tvm.relax (the same class): a runtime-only TVM, as the armv7 board's,
        # cannot import tvm.relax ("tvm.ir._ffi_api has no attribute 'RegisterOpAttr'").
        import tvm.runtime.vm  # noqa: PLC0415

        dev = tvm.cpu()
        self._tensor = lambda a: tvm.runtime.tensor(a, dev)
        self.vm = tvm.runtime.vm.VirtualMachine(executable, dev)
        self.timed_vm = tvm.runtime.vm.VirtualMachine(executable, dev)
        self.params = [self._tensor(a) for a in params]
        self.impls = impls
        self.notes = notes or []
        self.tuning = tuning or []  # the tuning databases the plan applied, for the result
        self.keepalive = keepalive  # e.g. registered NNPACK kernels the module calls into
        # symbol the VM reports -> layer id
        self.symbols = {name: lid for lid, name in (external or {}).items()}
        self.absorbed = dict(absorbed or {})  # layer id -> the conv whose kernel computes it
        self.layer_ids = set(layer_ids) - set(self.absorbed)  # the layers with a call of their own

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.vm["main"](self._tensor(x), *self.params).numpy()

    def run_timed(self, x: np.ndarray, clock: Clock) -> tuple[np.ndarray, dict[str, int]]:
        starts: dict[str, int] = {}
        times: dict[str, int] = {}
        called_absorbed: set[str] = set()

        def instrument(func, symbol, before_run, ret, *args):
            lid = self.symbols.get(symbol) or layer_id_of(symbol)
            if lid in self.absorbed:
                called_absorbed.add(lid)
            elif lid in self.layer_ids:
                if before_run:
                    starts[lid] = clock()
                else:
                    times[lid] = clock() - starts.pop(lid)
            return 0  # VMInstrumentReturnKind.NO_OP: run the call normally

        self.timed_vm.set_instrument(instrument)
        out = self.timed_vm["main"](self._tensor(x), *self.params).numpy()
        missing = self.layer_ids - set(times)
        if missing:
            raise RuntimeError(f"the VM reported no call for layers {sorted(missing)}: "
                               "was a layer function inlined or renamed?")
        if called_absorbed:
            raise RuntimeError(f"layers {sorted(called_absorbed)} are said to be fused into another layer's kernel "
                               "but have a call of their own: the module and its fusion map disagree")
        return out, {**times, **{lid: 0 for lid in self.absorbed}}

    def impl(self, layer_id: str) -> str:
        return self.impls[layer_id]
