import pytest
import torch

# Test tensors are small: one intra-op thread is faster than two, and it keeps the timing of the
# multi-process tests (which start their own interpreters) from fighting over the same two cores.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
