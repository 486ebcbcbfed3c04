"""`python -m harness.nightly.asv_entry ARGS`: asv's own command line, with the machine file
in the repository instead of ~/.asv-machine.json.

asv 0.6.6 reads and writes its machine descriptions in ~/.asv-machine.json, one file shared by
every checkout of every project of the user: two worktrees registering "local" on different
machines overwrote each other (issue 10). asv's machine code takes the file's path as a
parameter (`_path`, used by its own tests) but its command line does not expose it; its one
default is MachineCollection.get_machine_file_path, which this entry point points at
HARNESS_ASV_MACHINE_FILE before handing over to asv's main.
"""
from __future__ import annotations

import os
import sys

ENV = "HARNESS_ASV_MACHINE_FILE"


def main() -> None:
    path = os.environ.get(ENV)
    if not path:
        sys.exit(f"{ENV} is not set: it names the repository's asv machine file")
    from asv.machine import MachineCollection  # noqa: PLC0415

    MachineCollection.get_machine_file_path = staticmethod(lambda: path)
    from asv.main import main as asv_main  # noqa: PLC0415

    asv_main()


if __name__ == "__main__":
    main()
