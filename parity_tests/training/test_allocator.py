"""torch_lm/training/allocator.py: glibc's malloc keeps freed memory, so fresh tensors of a
training step stop page-faulting; elsewhere nothing changes."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from torch_lm.training import allocator

ON_GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

# Allocate and free activation-sized float32 tensors (~2 MiB, the default model's first hidden
# layer), each a page larger than the last, and print the minor page faults. Growing sizes make
# glibc's default behaviour deterministic: its mmap threshold only rises to the size of a block
# already freed, so every new, larger block is a fresh mmap whose pages all fault. Kept, they
# come from the heap, which grows by a page per block. A fresh interpreter, so that nothing the
# test session did to the allocator is inherited.
FAULTS_SCRIPT = """
import resource, sys, torch
from torch_lm.training.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for i in range(200):
    x = torch.ones((2 * 1024 * 1024 + 4096 * i) // 4)    # written, so every page is touched
    del x
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}  # glibc's defaults
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    out = subprocess.run(
        [sys.executable, "-c", FAULTS_SCRIPT, mode], capture_output=True, text=True, check=True, env=env
    )
    return int(out.stdout.strip())


@pytest.mark.skipif(not ON_GLIBC, reason="mallopt is glibc's")
def test_keep_freed_memory_sets_both_thresholds_and_is_idempotent():
    assert allocator.keep_freed_memory() is True
    assert allocator.keep_freed_memory() is True


@pytest.mark.skipif(not ON_GLIBC, reason="mallopt is glibc's")
def test_fresh_activation_sized_tensors_stop_page_faulting():
    # Default: >= 512 faults per block (2 MiB of 4 KiB pages; measured ~613). Kept: the heap's
    # growth and bookkeeping only (measured 14-23 per block).
    default, kept = page_faults("default"), page_faults("keep")
    assert default >= 512 * 200 and kept <= 64 * 200, (default, kept)


def test_without_glibc_nothing_is_changed(monkeypatch):
    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator.keep_freed_memory() is False
    assert allocator._glibc_mallopt() is None
