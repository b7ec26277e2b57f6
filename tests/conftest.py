"""Shared fixtures. One real Ray instance serves the whole test session: it takes seconds to start."""

import os

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray instance with 2 CPUs and 1 fake GPU (scheduling only; torch still sees no CUDA).

    Sweep scripts run as subprocesses join it through `ray.init(address="auto")`.
    """
    import ray

    os.environ.pop("CUDA_VISIBLE_DEVICES", None)  # an empty value would hide the fake GPU from Ray
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False)
    # The sweeps' "auto" in a subprocess joins the instance RAY_ADDRESS names; without it they would start a
    # private instance of their own (they never join one another driver started, as this one is).
    os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
    yield ray
    os.environ.pop("RAY_ADDRESS", None)
    ray.shutdown()


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """One intra-op thread: the tests' models are tiny, and on a 2-core machine shared with Ray
    workers, two spinning threads per process made them 10-40x slower (measured)."""
    import torch

    torch.set_num_threads(1)
    yield
