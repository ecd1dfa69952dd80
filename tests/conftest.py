"""Test-wide setup: on a machine without CUDA, Triton kernels run in Triton's CPU interpreter.

Triton reads TRITON_INTERPRET when it is first imported, so this must happen before any test
module imports triton (conftest.py is imported first).
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
