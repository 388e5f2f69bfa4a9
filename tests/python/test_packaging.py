"""The installed package: its version is the C++ project's, it is typed, the wheel that
`pip wheel adapters/python` built holds the extension and the stubs, and `import aclora`
loads neither transformers nor diffusers."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

import aclora
from aclora import _core
from conftest import ROOT


def cmake_version() -> str:
    text = (ROOT / "CMakeLists.txt").read_text()
    match = re.search(r"project\(aclora\s+VERSION\s+([0-9]+\.[0-9]+\.[0-9]+)", text)
    assert match, "project(aclora VERSION ...) not found in CMakeLists.txt"
    return match.group(1)


def test_version_is_the_cpp_projects():
    # aclora.__version__ (compiled in), the distribution's metadata and CMakeLists.txt agree.
    assert aclora.__version__ == cmake_version()
    assert importlib.metadata.version("aclora") == cmake_version()


def test_extension_was_built_for_the_loaded_torch():
    # The extension records the torch it was compiled against; import checks it is this one.
    assert _core.torch_build_version == torch.__version__


def test_package_is_typed_and_the_stub_covers_the_extension():
    # py.typed and _core.pyi are installed, and the stub declares every public name of _core.
    folder = Path(aclora.__file__).parent
    assert (folder / "py.typed").exists()
    stub = ast.parse((folder / "_core.pyi").read_text())
    declared = {node.name for node in stub.body if isinstance(node, (ast.ClassDef, ast.FunctionDef))}
    declared |= {target.id for node in stub.body if isinstance(node, ast.AnnAssign)
                 for target in [node.target] if isinstance(target, ast.Name)}
    public = {name for name in dir(_core) if not name.startswith("_")} | {"__version__"}
    assert public - declared == set()


def test_import_does_not_load_the_integrations():
    # transformers and diffusers are imported only when RestartCallback is used.
    code = "import aclora, sys; print('transformers' in sys.modules, 'diffusers' in sys.modules)"
    output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert output.split() == ["False", "False"]


def test_wheel_contents():
    # The wheel built by `pip wheel adapters/python` (run.sh) carries the version in its name,
    # the extension, the Python modules and the typing files.
    wheel = os.environ.get("ACLORA_PYTHON_WHEEL")
    if not wheel:
        if os.environ.get("ACLORA_PYTHON_REQUIRE_ALL") == "1":
            pytest.fail("ACLORA_PYTHON_WHEEL is not set (run.sh builds the wheel)")
        pytest.skip("ACLORA_PYTHON_WHEEL (a wheel built from adapters/python) not given")
    assert Path(wheel).name.startswith(f"aclora-{cmake_version()}-")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(re.fullmatch(r"aclora/_core\..*\.so", name) for name in names)
    for name in ("aclora/__init__.py", "aclora/_core.pyi", "aclora/py.typed", "aclora/trainer_callback.py"):
        assert name in names
