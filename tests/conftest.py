"""Test-wide setup: on a machine without CUDA, Triton kernels run in Triton's CPU interpreter
(Triton reads TRITON_INTERPRET when it is first imported, so this must happen before any test
module imports triton: conftest.py is imported first); and fixtures shared by test modules.
"""
import os

import numpy as np
import pytest
import torch


def _version(text: str) -> tuple[int, int]:
    major, minor = text.split(".")[:2]
    return int(major), int(minor)


def _let_old_interpreters_index_with_new_numpy() -> None:
    """Triton <= 3.6's interpreter turns a scalar kernel argument (a 1-element array) into a Python
    int with int(array), which numpy >= 2.4 refuses ("only 0-dimensional arrays can be converted"):
    every kernel with a loop over a runtime bound fails. Triton 3.7 converts the squeezed array;
    give older interpreters the same conversion, for the tests only."""
    import triton
    from triton.runtime import interpreter

    if _version(triton.__version__) >= (3, 7) or _version(np.__version__) < (2, 4):
        return
    patch_tensor = interpreter._patch_lang_tensor

    def patched(tensor, scope):
        patch_tensor(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    interpreter._patch_lang_tensor = patched


if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
    _let_old_interpreters_index_with_new_numpy()


@pytest.fixture
def shared(tmp_path, monkeypatch):
    """A folder the cluster tests' fake measures log their runs to (their tasks inherit the environment)."""
    path = tmp_path / "shared"
    path.mkdir()
    monkeypatch.setenv("VITTT_TEST_DIR", str(path))
    return path
