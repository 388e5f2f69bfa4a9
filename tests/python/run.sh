#!/usr/bin/env bash
# The Python package's tests, on Debian's python3-torch (LibTorch 1.13, what libtorch-dev has):
# installs the Debian packages it needs (apt-get) and the pinned PyPI packages
# (tests/python/requirements.txt) into a venv that sees Debian's torch; builds the package the
# two ways users do (`pip install adapters/python` with build isolation, `pip wheel
# --no-build-isolation adapters/python`) and the C++ reference program, in parallel; runs
# pytest. Extra arguments go to pytest. Build folder: ${ACLORA_BUILD_DIR:-build}/python.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${ACLORA_BUILD_DIR:-$root/build}/python
python=/usr/bin/python3  # Debian's interpreter: python3-torch is built for it
start=$SECONDS
mkdir -p "$build"

# 1. Debian packages (python3-torch brings numpy, yaml, requests, psutil; libtorch-dev the
#    C++ headers and CMake config of the same LibTorch; python3-jinja2 the model card that
#    PEFT writes into every Trainer checkpoint).
packages=(python3-torch libtorch-dev python3-pybind11 python3-pytest python3-venv python3-dev
          python3-pip python3-jinja2 cmake g++ make)
missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "aclora python: installing ${missing[*]}"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# 2. The venv: Debian's site-packages visible, pinned PyPI packages without dependency
#    resolution (see requirements.txt).
venv=$build/venv
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv --system-site-packages "$venv"
fi
"$venv/bin/python" -m pip install -q --no-deps -r "$root/tests/python/requirements.txt"
echo "aclora python: packages ready ($((SECONDS - start)) s)"

# 3. Three builds at once: the package installed with build isolation (its build requirements
#    pinned by constraints.txt), a wheel without build isolation, and record_restart.
export PIP_CONSTRAINT=$root/tests/python/constraints.txt
rm -rf "$build/wheel"
"$venv/bin/python" -m pip install -q --no-deps --force-reinstall \
  --config-settings=build-dir="$build/install-build" "$root/adapters/python" \
  >"$build/install.log" 2>&1 &
install_pid=$!
"$venv/bin/python" -m pip wheel -q --no-deps --no-build-isolation -w "$build/wheel" \
  --config-settings=build-dir="$build/wheel-build" "$root/adapters/python" \
  >"$build/wheel.log" 2>&1 &
wheel_pid=$!
(cmake -S "$root/tests/python/reference" -B "$build/reference" -DCMAKE_BUILD_TYPE=Release &&
  cmake --build "$build/reference") >"$build/reference.log" 2>&1 &
reference_pid=$!
failed=0
wait $install_pid || { echo "pip install adapters/python failed:"; tail -40 "$build/install.log"; failed=1; }
wait $wheel_pid || { echo "pip wheel adapters/python failed:"; tail -40 "$build/wheel.log"; failed=1; }
wait $reference_pid || { echo "record_restart failed:"; tail -40 "$build/reference.log"; failed=1; }
[ $failed -eq 0 ] || exit 1
unset PIP_CONSTRAINT
echo "aclora python: package, wheel and record_restart built ($((SECONDS - start)) s)"

# 4. pytest, with every test required (a missing package fails instead of skipping).
wheel=$(ls "$build"/wheel/aclora-*.whl)
cd "$root/tests/python"
status=0
PYTHONDONTWRITEBYTECODE=1 ACLORA_PYTHON_REQUIRE_ALL=1 ACLORA_RECORD_RESTART="$build/reference/record_restart" \
  ACLORA_PYTHON_WHEEL="$wheel" "$venv/bin/python" -m pytest -q -p no:cacheprovider -rs "$@" || status=$?
echo "aclora python: done in $((SECONDS - start)) s"
exit $status
