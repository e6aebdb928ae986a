#!/usr/bin/env bash
# Build the interface package lift_localizer_msgs (this directory) and install it into a Python
# venv that holds the ROS 2 Kilted PyPI wheels (requirements.txt), so that
#   VENV/bin/python -c 'from lift_localizer_msgs.msg import Keypoints'
# works with no environment variables at run time.
#
#   msg/build_into_venv.sh VENV
#   msg/build_into_venv.sh --fix-only VENV   # only repair the wheels' CMake files (below), e.g.
#                                            # before `colcon build` against the same venv
#
# Idempotent: it can be re-run; the build directory is a fresh temporary one each time.
# In a ROS 2 workspace use `colcon build` instead (see README); this script is for the venv.
set -euo pipefail

die() { echo "build_into_venv: error: $*" >&2; exit 1; }

FIX_ONLY=0
if [ "${1:-}" = "--fix-only" ]; then FIX_ONLY=1; shift; fi
[ $# -eq 1 ] || die "usage: $0 [--fix-only] VENV"
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$(cd "$1" 2>/dev/null && pwd)" || die "no such venv: $1"
PY="$VENV/bin/python"
[ -x "$PY" ] || die "$PY is missing: create the venv and install requirements.txt first"
command -v cmake >/dev/null || die "cmake is not on PATH (apt-get install cmake)"
command -v c++ >/dev/null || command -v g++ >/dev/null || die "no C/C++ compiler on PATH (apt-get install build-essential)"
[ -f "$VENV/share/rosidl_default_generators/package.xml" ] \
  || die "rosidl_default_generators is not in $VENV: pip install -r requirements.txt first"

# The message wheels' exported CMake targets name the include paths of the machine that built
# them (/opt/python/cp3xx-cp3xx/...: Python and numpy headers). Point them at this venv's own.
read -r PY_INC NP_INC < <("$PY" -c 'import sysconfig, numpy; print(sysconfig.get_paths()["include"], numpy.get_include())') \
  || die "$PY cannot import numpy"
[ -f "$PY_INC/Python.h" ] || die "Python headers are missing ($PY_INC/Python.h): install the python3-dev package of this Python"
mapfile -t CMAKE_FILES < <(grep -rlI --include='*.cmake' '/opt/python/' "$VENV/share" || true)
if [ ${#CMAKE_FILES[@]} -gt 0 ]; then
  echo "build_into_venv: rewriting wheel-builder include paths in ${#CMAKE_FILES[@]} CMake files"
  sed -i -E \
    -e "s#/opt/python/[^/;\"]+/lib/python3\.[0-9]+/site-packages/numpy/(_core/|core/)?include#${NP_INC}#g" \
    -e "s#/opt/python/[^/;\"]+/include/python3\.[0-9]+#${PY_INC}#g" \
    "${CMAKE_FILES[@]}"
  if left=$(grep -rlI --include='*.cmake' '/opt/python/' "$VENV/share"); then
    die "paths under /opt/python/ are still named in: $left"
  fi
fi
[ "$FIX_ONLY" = 1 ] && exit 0

BUILD="$(mktemp -d "${TMPDIR:-/tmp}/lift_localizer_msgs-build.XXXXXX")"
trap 'rm -rf "$BUILD"' EXIT

# ament finds its packages (rosidl_typesupport_c, ...) through the ament index of AMENT_PREFIX_PATH;
# the venv is the only prefix. Only the build needs it: the result is found through site-packages.
export AMENT_PREFIX_PATH="$VENV"
export CMAKE_PREFIX_PATH="$VENV"
export PATH="$VENV/bin:$PATH"

cmake -S "$SRC" -B "$BUILD" \
  -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$VENV" \
  -DCMAKE_INSTALL_PREFIX="$VENV" \
  -DPython3_EXECUTABLE="$PY" \
  -DPython3_FIND_VIRTUALENV=ONLY \
  -DBUILD_TESTING=OFF
cmake --build "$BUILD" --parallel "$(nproc 2>/dev/null || echo 2)"
cmake --install "$BUILD"

# The check that matters: import it with no ROS environment at all.
env -i HOME="${HOME:-/tmp}" "$PY" -c '
import numpy as np
from lift_localizer_msgs.msg import Keypoints
m = Keypoints(x=np.zeros(3, np.float32), descriptor_size=128)
assert len(m.x) == 3
print("build_into_venv: lift_localizer_msgs installed into", __import__("sys").prefix)
' || die "lift_localizer_msgs was installed but does not import from $PY"
