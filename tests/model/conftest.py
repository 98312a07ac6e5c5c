"""Model tests use tiny tensors, for which one thread beats thread-pool hand-offs on a busy CPU."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
