"""Per-layer benchmarking of UNet inference builds on small ARM boards."""
import os as _os

__version__ = "0.1.0"

# TVM sizes its thread pool once, from TVM_NUM_THREADS, when it first runs parallel code; left
# unset it uses a single thread on these VMs, halving every TVM number. Set it before anything
# in this process can touch TVM. A value the user exported wins.
_os.environ.setdefault("TVM_NUM_THREADS", str(len(_os.sched_getaffinity(0)) if hasattr(_os, "sched_getaffinity")
                                               else _os.cpu_count() or 1))

# TVM's workers spin after each parallel kernel waiting for the next one. In the hybrid, the
# next kernel is often NNPACK's, on its own threads, and the spinning workers took the cores
# from it: an NNPACK layer inside the TVM module ran 1.7x slower than alone (10.5 vs 6.2 ms).
# Without spinning it runs as fast as alone, and pure TVM loses nothing measurable (137 vs 140
# ms end to end on unet). It also keeps idle TVM threads off the cores of later builds.
_os.environ.setdefault("TVM_THREAD_POOL_SPIN_COUNT", "0")
