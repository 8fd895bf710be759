import torch

from neon_steps.models import load_adapter
from neon_steps.sampling import balanced_labels, draw

SPEC = {"adapter": "toy-autoregressive", "arch": {"bins": 16, "hidden": 8, "layers": 1}}


def test_a_draw_extends_without_changing_its_first_shards():
    adapter = load_adapter(SPEC)
    small = draw(adapter, 250, seed=3, kappa={"tau": 1.0}, shard_size=100)
    large = draw(adapter, 1000, seed=3, kappa={"tau": 1.0}, shard_size=100)
    assert torch.equal(large[:200], small[:200])
    assert not torch.equal(draw(adapter, 100, seed=4, kappa={"tau": 1.0}, shard_size=100), small[:100])


def test_balanced_labels():
    labels = balanced_labels(1003, 10, seed=0)
    counts = torch.bincount(labels, minlength=10)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 1003
    assert torch.equal(labels, balanced_labels(1003, 10, seed=0))
    assert not torch.equal(labels[:20], torch.arange(20) % 10)  # shuffled
