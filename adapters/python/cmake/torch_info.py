"""Prints what the extension's build needs to know about the installed torch, one
"key=value" line each: version, CMake prefix, library folder, pybind11 ABI strings.

Run by CMakeLists.txt with the interpreter the package is built for. Exits with status 3
when torch cannot be imported (CMake then retries outside pip's build isolation)."""

import os
import sys

try:
    import torch
    import torch.utils
except ImportError as error:  # the caller explains what to do
    print(f"error={error}")
    sys.exit(3)

torch_dir = os.path.dirname(torch.__file__)
print(f"version={torch.__version__}")
print(f"cmake_prefix={getattr(torch.utils, 'cmake_prefix_path', '')}")
print(f"library_dir={os.path.join(torch_dir, 'lib')}")
print(f"include_dir={os.path.join(torch_dir, 'include')}")
print(f"cxx11_abi={int(bool(torch._C._GLIBCXX_USE_CXX11_ABI))}")
for key in ("_PYBIND11_COMPILER_TYPE", "_PYBIND11_STDLIB", "_PYBIND11_BUILD_ABI"):
    value = getattr(torch._C, key, None)
    if value:
        print(f"{key.lower().lstrip('_')}={value}")
