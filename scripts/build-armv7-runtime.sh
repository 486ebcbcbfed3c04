#!/usr/bin/env bash
# Cross-compile a runtime-only TVM for armv7 / armhf (a Raspberry Pi 3B on 32-bit Raspberry Pi OS)
# on an x86-64 Debian 12 host, with Debian's arm-linux-gnueabihf-g++:
#   - libtvm_ffi.so and the tvm_ffi Cython core from PyPI's apache-tvm-ffi sdist;
#   - libtvm_runtime.so from the C++ runtime sources the apache-tvm wheel ships (the host's installed
#     apache-tvm, so the board's runtime is the version that compiles the modules).
# The result is a board site-packages, OUTDIR/site/ (tvm/, tvm_ffi/, typing_extensions), which
# `harness devices emulate --board pi3-armv7` installs into its armhf userland, or which can be
# copied into a Pi's venv (docs/pi-setup.md, "armv7").
#
# Usage: scripts/build-armv7-runtime.sh [OUTDIR]        (default: .board/armv7-runtime)
#   HOST_PY: a Python with apache-tvm 0.27.0.post1 (default: the repository's .venv/bin/python, else python3)
#   JOBS:    parallel compiles (default 2; every compile runs under nice -n 19)
# Idempotent: every step skips what is already built; OUTDIR/BUILD-INFO is written last, so its
# presence means a complete build. 10-25 min on 2 shared cores, ~300 MB of disk in OUTDIR/work.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
PATCHES=$HERE/patches
OUT=$(mkdir -p "${1:-$REPO/.board/armv7-runtime}" && cd "${1:-$REPO/.board/armv7-runtime}" && pwd)
WD=$OUT/work
JOBS=${JOBS:-2}
FFI_VER=0.1.14.post0       # the tvm-ffi that apache-tvm 0.27.0.post1 is built against
TVM_VER=0.27.0.post1
SUITE=bookworm             # Raspberry Pi OS 12 is bookworm: python3 3.11, as the sysroot's headers
SOABI=cpython-311-arm-linux-gnueabihf
# Both are hard-float (VFP register arguments), as Raspberry Pi OS armhf; neon-vfpv4 suits Pi 2 v1.2 and later.
ARCH_FLAGS="-march=armv7-a -mfpu=neon-vfpv4 -mfloat-abi=hard"

die() { echo "build-armv7-runtime: $*" >&2; exit 1; }
step() { echo "== $(date +%H:%M:%S) $*"; }

# ---------------------------------------------------------------- 0. host tools (no apt here: say what is missing)
missing=()
for pair in arm-linux-gnueabihf-g++:g++-arm-linux-gnueabihf mmdebstrap:mmdebstrap ninja:ninja-build \
            qemu-arm:qemu-user python3:python3-venv; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
[ ${#missing[@]} -eq 0 ] || die "missing host tools; install: apt-get install --no-install-recommends ${missing[*]}"
if [ -z "${HOST_PY:-}" ]; then
  HOST_PY=python3
  [ -x "$REPO/.venv/bin/python" ] && HOST_PY=$REPO/.venv/bin/python
fi
TVM_PKG=$("$HOST_PY" - "$TVM_VER" <<'EOF' 2>/dev/null
import importlib.metadata as m, pathlib, sys
d = m.distribution("apache-tvm")
if d.version != sys.argv[1]:
    raise SystemExit(1)
print(pathlib.Path(d.locate_file("tvm")))
EOF
) || die "$HOST_PY has no apache-tvm==$TVM_VER (set HOST_PY to a Python that has it)"
[ -d "$TVM_PKG/src/runtime" ] || die "$TVM_PKG has no src/runtime: this apache-tvm wheel ships no runtime sources"
mkdir -p "$WD"
cd "$WD"

# ---------------------------------------------------------------- 1. armhf sysroot
# Headers and libraries to compile and link against (python3-dev:armhf for the Cython core), and
# python3-numpy for the smoke test. --variant=extract runs no package scripts, so it needs no
# emulation (~15 s, ~120 MB), but the BLAS alternatives links numpy needs are then made here.
if [ ! -e sysroot/usr/include/python3.11/Python.h ]; then
  step "armhf sysroot ($SUITE) with mmdebstrap"
  rm -rf sysroot.tmp
  mmdebstrap --quiet --variant=extract --arch=armhf \
    --include=python3,python3-dev,libpython3-dev,python3-numpy,libstdc++6,zlib1g "$SUITE" sysroot.tmp > mmdebstrap.log 2>&1 \
    || die "mmdebstrap failed (log: $WD/mmdebstrap.log)"
  ln -sf blas/libblas.so.3 sysroot.tmp/usr/lib/arm-linux-gnueabihf/libblas.so.3
  ln -sf lapack/liblapack.so.3 sysroot.tmp/usr/lib/arm-linux-gnueabihf/liblapack.so.3
  mv sysroot.tmp sysroot
fi

# ---------------------------------------------------------------- 2. host build tools
# tvm-ffi's CMakeLists needs cmake >= 3.26 (bookworm has 3.25.1: "CMake 3.26 or higher is
# required"); its pyproject pins Cython >= 3.2.8. The venv uses the host's python3 (3.11), so Cython
# generates code for the board's Python minor version.
if [ ! -x bvenv/bin/cython ] || [ ! -x bvenv/bin/cmake ]; then
  step "build venv (cmake 3.31.6, Cython 3.2.8)"
  /usr/bin/python3 -m venv bvenv
  bvenv/bin/pip install --quiet --disable-pip-version-check 'cython==3.2.8' 'cmake==3.31.6'
fi
[ "$(bvenv/bin/python -c 'import sys; print("%d%d" % sys.version_info[:2])')" = 311 ] \
  || die "the host's /usr/bin/python3 is not 3.11: Cython would target the wrong Python"

# ---------------------------------------------------------------- 3. sources
# 3a. the tvm-ffi sdist, patched. The patch fixes a real 32-bit bug: tvm_ffi_python_object.h
# static_asserts that PyCustomAllocHeader is 16 bytes, which two pointers are not on armv7.
if [ ! -f ffi-src/.patched ]; then
  step "apache-tvm-ffi $FFI_VER sdist"
  mkdir -p dl
  [ -f dl/apache_tvm_ffi-$FFI_VER.tar.gz ] || bvenv/bin/pip download --quiet --disable-pip-version-check \
    "apache-tvm-ffi==$FFI_VER" --no-binary apache-tvm-ffi --no-deps -d dl
  rm -rf ffi-src apache_tvm_ffi-$FFI_VER
  tar xzf dl/apache_tvm_ffi-$FFI_VER.tar.gz
  patch -d apache_tvm_ffi-$FFI_VER -p1 --quiet < "$PATCHES/ffi-32bit-header.patch"
  mv apache_tvm_ffi-$FFI_VER ffi-src
  touch ffi-src/.patched
fi
# 3b. the runtime's C++ sources from the installed wheel, plus the 19 headers they include that the
# wheel does not ship, and a CMakeLists (the wheel has no build files). The headers come from
# apache/tvm at TVM_HEADERS_COMMIT, the closest commit to the wheel's (which is not on main):
# from a local checkout or git directory of apache/tvm in TVM_SOURCE_DIR, else downloaded from
# GitHub; either way each is checked against scripts/patches/tvm-support-headers.sha256.
TVM_HEADERS_COMMIT=5d4dc8721307cf9677becacf0395c19be130e206
fetch_header() {  # path inside apache/tvm -> tvm-src/path
  local path=$1 dest=tvm-src/$1
  mkdir -p "$(dirname "$dest")"
  if [ -n "${TVM_SOURCE_DIR:-}" ] && [ -f "$TVM_SOURCE_DIR/$path" ]; then
    cp "$TVM_SOURCE_DIR/$path" "$dest"
  elif [ -n "${TVM_SOURCE_DIR:-}" ] && git --git-dir="$TVM_SOURCE_DIR" cat-file -e "$TVM_HEADERS_COMMIT:$path" 2>/dev/null; then
    git --git-dir="$TVM_SOURCE_DIR" show "$TVM_HEADERS_COMMIT:$path" > "$dest"
  else
    curl -fsSL --retry 2 -o "$dest" "https://raw.githubusercontent.com/apache/tvm/$TVM_HEADERS_COMMIT/$path" ||
      die "cannot download $path of apache/tvm $TVM_HEADERS_COMMIT from GitHub; set TVM_SOURCE_DIR to a checkout (or git directory) of apache/tvm that has that commit"
  fi
}
if [ ! -f tvm-src/CMakeLists.txt ]; then
  step "TVM runtime sources from $TVM_PKG"
  rm -rf tvm-src && mkdir -p tvm-src/src
  cp -r "$TVM_PKG/src/runtime" tvm-src/src/
  cp -r "$TVM_PKG/include" tvm-src/
  while read -r _sum path; do fetch_header "$path"; done < "$PATCHES/tvm-support-headers.sha256"
  (cd tvm-src && sha256sum --quiet -c "$PATCHES/tvm-support-headers.sha256") ||
    die "apache/tvm headers do not match scripts/patches/tvm-support-headers.sha256"
  cp "$PATCHES/tvm-runtime-CMakeLists.txt" tvm-src/CMakeLists.txt
fi

# ---------------------------------------------------------------- 4. cross toolchain file
cat > armhf-toolchain.cmake <<EOF
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR armv7l)
set(CMAKE_C_COMPILER arm-linux-gnueabihf-gcc)
set(CMAKE_CXX_COMPILER arm-linux-gnueabihf-g++)
set(CMAKE_C_FLAGS_INIT "$ARCH_FLAGS")
set(CMAKE_CXX_FLAGS_INIT "$ARCH_FLAGS")
set(CMAKE_FIND_ROOT_PATH $WD/sysroot)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
EOF

# ---------------------------------------------------------------- 5. tvm-ffi: libtvm_ffi.so + Cython core
# -idirafter sysroot/usr/include: Debian's multiarch pyconfig.h includes
# <arm-linux-gnueabihf/python3.11/pyconfig.h>. CMAKE_CXX_FLAGS replaces the toolchain's FLAGS_INIT,
# so the arch flags are repeated here.
step "tvm-ffi (cmake + ninja -j$JOBS)"
[ -f build-ffi/build.ninja ] || bvenv/bin/cmake -S ffi-src -B build-ffi -G Ninja \
  -DCMAKE_TOOLCHAIN_FILE="$WD/armhf-toolchain.cmake" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CXX_FLAGS="$ARCH_FLAGS -idirafter $WD/sysroot/usr/include" \
  -DTVM_FFI_BUILD_PYTHON_MODULE=ON -DPython_EXECUTABLE="$WD/bvenv/bin/python" \
  -DPython_INCLUDE_DIR="$WD/sysroot/usr/include/python3.11" -DSKBUILD_SOABI=$SOABI > cmake-ffi.log 2>&1 \
  || die "cmake (tvm-ffi) failed (log: $WD/cmake-ffi.log)"
nice -n 19 bvenv/bin/cmake --build build-ffi -j"$JOBS" > build-ffi.log 2>&1 \
  || die "tvm-ffi build failed: $(grep -m1 -E 'error|Error' build-ffi.log || tail -1 build-ffi.log) (log: $WD/build-ffi.log)"

# ---------------------------------------------------------------- 6. libtvm_runtime.so
# TVM's RUNTIME_SRCS with USE_RPC: src/runtime/*.cc, vm/, memory/, rpc/ (no extra/, no GPU).
step "libtvm_runtime.so (cmake + ninja -j$JOBS)"
[ -f build-rt/build.ninja ] || bvenv/bin/cmake -S tvm-src -B build-rt -G Ninja \
  -DCMAKE_TOOLCHAIN_FILE="$WD/armhf-toolchain.cmake" -DCMAKE_BUILD_TYPE=Release \
  -DTVM_FFI_SRC="$WD/ffi-src" -DTVM_FFI_LIB="$WD/build-ffi/lib/libtvm_ffi.so" > cmake-rt.log 2>&1 \
  || die "cmake (runtime) failed (log: $WD/cmake-rt.log)"
nice -n 19 bvenv/bin/cmake --build build-rt -j"$JOBS" > build-rt.log 2>&1 \
  || die "runtime build failed: $(grep -m1 -E 'error|Error' build-rt.log || tail -1 build-rt.log) (log: $WD/build-rt.log)"

# ---------------------------------------------------------------- 7. the board site-packages
# The wheels' layout: tvm_ffi/core.<SOABI>.so + tvm_ffi/lib/libtvm_ffi.so, and tvm/lib/
# libtvm_runtime.so with no libtvm_compiler.so, so `import tvm` on the board is runtime-only.
step "board site-packages: $OUT/site"
rm -rf "$OUT/site.tmp" && mkdir -p "$OUT/site.tmp/tvm_ffi/lib" "$OUT/site.tmp/tvm/lib"
cp -r ffi-src/python/tvm_ffi/. "$OUT/site.tmp/tvm_ffi/"
cp build-ffi/lib/libtvm_ffi.so "$OUT/site.tmp/tvm_ffi/lib/"
cp build-ffi/core*.so "$OUT/site.tmp/tvm_ffi/"
(cd "$TVM_PKG/.." && tar cf - --exclude=tvm/lib --exclude=tvm/lib64 --exclude=tvm/src --exclude=tvm/include \
   --exclude=tvm/3rdparty --exclude=tvm/web --exclude=__pycache__ tvm) | tar xf - -C "$OUT/site.tmp"
cp build-rt/libtvm_runtime.so "$OUT/site.tmp/tvm/lib/"
# tvm_ffi's one pure-Python dependency
bvenv/bin/pip install --quiet --disable-pip-version-check --target "$OUT/site.tmp" --no-deps 'typing_extensions==4.15.0'
arm-linux-gnueabihf-strip --strip-unneeded "$OUT"/site.tmp/tvm/lib/*.so "$OUT"/site.tmp/tvm_ffi/lib/*.so \
  "$OUT"/site.tmp/tvm_ffi/core*.so
rm -rf "$OUT/site" && mv "$OUT/site.tmp" "$OUT/site"

# ---------------------------------------------------------------- 8. smoke test under qemu-arm
# Only the import (10-15 s under qemu): the harness's emulated board runs real modules.
step "smoke test: import tvm under qemu-arm"
qemu-arm -L sysroot -E PYTHONPATH="$OUT/site" -E TVM_FFI_DISABLE_TORCH_C_DLPACK=1 sysroot/usr/bin/python3 -c \
  'import tvm, tvm.runtime.vm, tvm_ffi, platform; print(platform.machine(), "tvm", tvm.__version__, "tvm_ffi", tvm_ffi.__version__)' \
  || die "the built runtime does not import under qemu-arm"
{
  echo "tvm $TVM_VER (runtime only, sources: $TVM_PKG)"
  echo "tvm_ffi $FFI_VER (sdist, patched: ffi-32bit-header.patch)"
  echo "python 3.11 ($SOABI), flags: $ARCH_FLAGS"
  echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  du -sh "$OUT/site/tvm" "$OUT/site/tvm_ffi" | sed 's/^/size /'
} > "$OUT/BUILD-INFO"
cat "$OUT/BUILD-INFO"
