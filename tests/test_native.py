"""Loading of the compiled modules: a source tree that shadows the installed package is
named in the error."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import torch

import pysid
from pysid import _native

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(pysid.__file__)))


def test_source_tree_is_detected(tmp_path):
    pkg = tmp_path / "pysid"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    err = ImportError("No module named 'pysid._C'")
    # a plain folder: the ordinary message
    assert _native.source_tree(str(pkg)) is None
    assert "reinstall pysid from source" in _native._missing_cpu_message(err, str(pkg))
    # a checkout (pyproject.toml beside the package) without a compiled module: say so
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'pysid'\n")
    assert _native.source_tree(str(pkg)) == str(tmp_path)
    msg = _native._missing_cpu_message(err, str(pkg))
    assert f"you are importing pysid from the source tree at {tmp_path}" in msg
    assert "run from another folder or pip install -e ." in msg and "No module named" in msg
    # a built checkout (the compiled module in the package folder) is not shadowing anything
    (pkg / "_C.cpython-311-x86_64-linux-gnu.so").write_text("")
    assert _native.source_tree(str(pkg)) is None


def test_running_from_a_source_tree_says_so(tmp_path):
    """End to end: a copy of the source tree first on sys.path (no editable-install hook, as
    when a plain install is shadowed by the current folder) names the tree in the error."""
    tree = tmp_path / "checkout"
    shutil.copytree(os.path.dirname(pysid.__file__), tree / "pysid",
                    ignore=shutil.ignore_patterns("_C.*", "_cuda.*", "__pycache__"))
    (tree / "pyproject.toml").write_text("[project]\nname = 'pysid'\n")
    site = os.path.dirname(os.path.dirname(torch.__file__))
    code = ("import pysid, pysid._native as n\n"
            "assert pysid.__file__.startswith(%r), pysid.__file__\n"
            "try:\n    n.cpu()\nexcept RuntimeError as e:\n    print(e)\n" % str(tree))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join([str(tree), site])
    out = subprocess.run([sys.executable, "-S", "-c", code], cwd=tree, capture_output=True, text=True, timeout=300,
                         env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"you are importing pysid from the source tree at {tree}" in out.stdout
