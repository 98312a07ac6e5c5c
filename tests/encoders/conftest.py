"""Encoder tests run on one thread: their tensors are so small that, on a busy machine, syncing
threads for every op costs more than the op itself. The previous setting is restored after each
module, so other tests keep theirs."""

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
