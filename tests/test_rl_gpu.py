"""DQN on a GPU: the CUDA-graph learner gives the same updates as the eager one. Skipped without CUDA
(CI has no GPU; run on the GPU host: ``bash benchmarks/gpu_host.sh OUT``)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dl_ray.rl.envs import describe_env
from dl_ray.rl.learner import Learner
from dl_ray.rl.spec import parse_rl_spec
from dl_ray.train.optim import make_optimizer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def pong_spec(cuda_graph: bool, optimizer: str):
    return parse_rl_spec({"name": "t", "kind": "dqn", "env": {"id": "ALE/Pong-v5"},
                          "model": {"name": "nature_cnn", "double": True, "dueling": True},
                          "optimizer": {"name": optimizer, "lr": 1e-4},
                          "dqn": {"batch_size": 32, "target_update_every": 5},
                          "learner": {"cuda_graph": cuda_graph}})


def pong_samples(calls: int, n: int):
    rng = np.random.default_rng(0)
    for _ in range(calls):
        yield {"window": rng.integers(0, 256, (n, 5, 84, 84), dtype=np.uint8), "action": rng.integers(0, 6, n),
               "reward": rng.choice([-1.0, 0.0, 1.0], n).astype(np.float32), "done": rng.random(n) < 0.05,
               "weight": rng.uniform(0.5, 1, n).astype(np.float32), "position": np.arange(n)}


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop"])
def test_cuda_graph_learner_matches_eager_updates(optimizer):
    info = describe_env(pong_spec(True, optimizer).env)
    eager, graphed = (Learner(pong_spec(g, optimizer), info, "cuda") for g in (False, True))
    # The same optimiser code on both sides: a capturable Adam computes its bias corrections on the GPU in float32,
    # which moves parameters whose gradients are ~0 by up to lr (seen on an H200: |td| 3e-4 apart after 8 updates).
    eager.optimizer = make_optimizer(eager.net, eager.spec.optimizer, l2=0.0, capturable=True)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True  # same kernels for both
    graphed.net.load_state_dict(eager.net.state_dict())
    graphed.target.load_state_dict(eager.target.state_dict())
    for sample in pong_samples(3, 4 * 32):  # 12 updates: the target is copied at 5 and 10
        m_eager, _, td_eager = eager.train(sample, 4)
        m_graphed, _, td_graphed = graphed.train(sample, 4)
        assert m_graphed["updates"] == m_eager["updates"]
        assert m_graphed["loss"] == pytest.approx(m_eager["loss"], rel=1e-4)
        np.testing.assert_allclose(td_graphed, td_eager, rtol=1e-3, atol=1e-4)
    assert graphed.graph is not None  # it really replayed a graph
    for a, b in zip(eager.net.state_dict().values(), graphed.net.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for a, b in zip(eager.target.state_dict().values(), graphed.target.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
