#!/usr/bin/env bash
# Sets up everything the harness needs on a fresh Debian machine, idempotently:
# Debian packages (only those missing), a virtualenv in .venv and the package in it.
#   scripts/setup.sh         what `harness run` needs
#   scripts/setup.sh --dev   also what the tests need: an OpenSSH server, ARM cross compilers,
#                            qemu-user and mmdebstrap (the emulated Pi of `harness devices emulate`
#                            and tests/test_emulated_board.py), headless Chromium, pytest
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
[[ "${1:-}" == "--dev" ]] && dev=1

# g++ links TVM modules (export_library); openssh-client for ssh-keygen.
debs=(g++ git openssh-client)
if (( dev )); then
    # qemu-user without its recommended qemu-user-binfmt (--no-install-recommends below): the board
    # runs through a wrapper, and binfmt handlers must not be registered on this machine.
    debs+=(openssh-server g++-aarch64-linux-gnu g++-arm-linux-gnueabihf binutils qemu-user mmdebstrap chromium)
fi

missing=()
for pkg in "${debs[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if (( ${#missing[@]} )); then
    echo "setup: installing Debian packages: ${missing[*]}"
    SUDO=""; (( EUID != 0 )) && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ ! -x .venv/bin/python ]]; then
    echo "setup: creating .venv"
    python3 -m venv .venv
fi
extra=""
(( dev )) && extra="[dev]"
echo "setup: installing the harness and its pinned dependencies into .venv"
if ! .venv/bin/pip install -q --disable-pip-version-check -e ".${extra}" > .venv/pip-install.log 2>&1; then
    cat .venv/pip-install.log >&2
    echo "setup: pip install failed (log above, also in .venv/pip-install.log)" >&2
    exit 1
fi
# The asv_runner plugin for the suite in benchmarks/ (a distribution of its own: asv_runner
# finds plugins by their distribution name, asv_bench_*).
if ! .venv/bin/pip install -q --disable-pip-version-check --no-build-isolation -e plugins/asv_bench_harness >> .venv/pip-install.log 2>&1; then
    cat .venv/pip-install.log >&2
    echo "setup: installing the asv plugin failed" >&2
    exit 1
fi
.venv/bin/python -c "import harness, torch, tvm, onnxruntime" || { echo "setup: the install is broken" >&2; exit 1; }
