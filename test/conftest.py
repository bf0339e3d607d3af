"""Fixtures shared by the test modules."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """One intra-op thread, restored afterwards. Small runs are faster so on a shared 2-core
    machine (each multi-threaded op waits at its barrier for a descheduled worker), and a
    batch and a single item are then summed in the same order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
