"""Per-layer benchmarking of UNet inference builds on small ARM boards."""
import os as _os

__version__ = "0.1.0"

# TVM sizes its thread pool once, from TVM_NUM_THREADS, when it first runs parallel code; left
# unset it uses a single thread on these VMs, halving every TVM number. Set it before anything
# in this process can touch TVM. A value the user exported wins.
_os.environ.setdefault("TVM_NUM_THREADS", str(len(_os.sched_getaffinity(0)) if hasattr(_os, "sched_getaffinity")
                                               else _os.cpu_count() or 1))
