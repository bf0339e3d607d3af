"""Fixtures shared by the test modules, and the lab on the import path.

The tests run against the built package (``python -P``: the source tree is not on sys.path, so
``sam_ros`` comes from the installed workspace). The lab (``lab``, which holds the
reference oracles) is not installed: the repository root is appended, after the installed
package, so that ``import lab`` works and ``import sam_ros`` still finds the build.
"""

import pathlib
import sys

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))


@pytest.fixture
def one_thread():
    """One intra-op thread, restored afterwards. Small runs are faster so on a shared 2-core
    machine (each multi-threaded op waits at its barrier for a descheduled worker), and a
    batch and a single item are then summed in the same order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
