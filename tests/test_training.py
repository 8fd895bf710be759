"""Training in budget segments gives the same bits as training in one go; a batch in chunks
(micro_batch) has the whole batch's gradient; a state's weights come out of it (ckpt) as they
went in."""
import json
import subprocess
import sys

import torch
from torch import nn

from conftest import REPO, TOY_DDPM
from neon_steps.ckpt import extract_weights
from neon_steps.io import load_metadata, load_tensors
from neon_steps.models import load_adapter
from neon_steps.models.base import Adapter
from neon_steps.seeding import generator
from neon_steps.training import Recipe, Trainer, batch_indices, is_state, weights_from_state

SPEC = TOY_DDPM


def fresh():
    torch.manual_seed(0)
    return load_adapter(SPEC)


def test_segments_resume_bit_for_bit(tmp_path):
    data = torch.randn(300, 2)
    recipe = Recipe(lr=1e-3, batch_size=64, seed=5, warmup_images=500)

    straight = Trainer(fresh(), recipe)
    straight.train(data, None, 20)

    first = Trainer(fresh(), recipe)
    first.train(data, None, 7)
    first.save_state(tmp_path / "B1.state.safetensors")
    second = Trainer(fresh(), recipe)
    second.load_state(tmp_path / "B1.state.safetensors")
    assert second.step == 7 and second.images_seen == 7 * 64
    second.train(data, None, 20)

    for name, value in straight.adapter.state_dict().items():
        assert torch.equal(value, second.adapter.state_dict()[name]), name


def train_before_micro_batch(adapter, recipe, data, until):
    """Trainer.train as it was before micro_batch: one loss on each step's whole batch."""
    params = [p for p in adapter.net.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=recipe.lr, betas=recipe.betas, weight_decay=recipe.weight_decay)
    adapter.net.train()
    for step in range(until):
        for group in optimizer.param_groups:
            group["lr"] = recipe.lr_at(step * recipe.batch_size)
        rows = batch_indices(step, len(data), recipe.batch_size, recipe.seed)
        loss = adapter.loss(data[rows], generator(recipe.seed, "step", step))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def test_a_recipe_without_micro_batch_trains_as_before_bit_for_bit(tmp_path):
    data = torch.randn(300, 2, generator=torch.Generator().manual_seed(3))
    recipe = Recipe(lr=1e-3, batch_size=64, seed=5, warmup_images=500)
    before = fresh()
    train_before_micro_batch(before, recipe, data, 12)
    for now in (Recipe(lr=1e-3, batch_size=64, seed=5, warmup_images=500),
                Recipe(lr=1e-3, batch_size=64, seed=5, warmup_images=500, micro_batch=64)):  # one chunk
        trainer = Trainer(fresh(), now)
        trainer.train(data, None, 12)
        for name, value in before.state_dict().items():
            assert torch.equal(value, trainer.adapter.state_dict()[name]), name
    # and its state file is the file it was: no micro_batch in the recipe it records
    Trainer(fresh(), recipe).save_state(tmp_path / "s.safetensors")
    assert json.loads(load_metadata(tmp_path / "s.safetensors")["recipe"]) == {
        "lr": 1e-3, "batch_size": 64, "seed": 5, "warmup_images": 500, "betas": [0.9, 0.999], "weight_decay": 0.0}


class Noiseless(Adapter):
    """An adapter whose loss draws no noise: chunks of a batch then have the batch's gradient."""
    family = "diffusion"
    batches_seen: list[int]

    def build(self, arch):
        self.batches_seen = []
        return nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2))

    def loss(self, batch, generator, labels=None):
        self.batches_seen.append(len(batch))
        return ((self.net(batch) - batch.flip(1)) ** 2).mean()

    def sample(self, n, generator, kappa, labels=None):
        raise NotImplementedError

    def nfe(self, kappa):
        return 1


def test_a_batch_in_chunks_trains_as_the_whole_batch():
    data = torch.randn(100, 2, generator=torch.Generator().manual_seed(4))
    # 32 rows in chunks of 8; and all 20 rows of a smaller set in chunks of 8, 8 and 4
    for rows, micro_batch in ((data, 8), (data[:20], 8)):
        trained = []
        for recipe in (Recipe(lr=1e-2, batch_size=32, seed=1), Recipe(lr=1e-2, batch_size=32, seed=1,
                                                                      micro_batch=micro_batch)):
            torch.manual_seed(0)
            trainer = Trainer(Noiseless({}), recipe)
            losses = trainer.train(rows, None, 10)
            trained.append((trainer.adapter.state_dict(), losses, trainer.adapter.batches_seen))
        (whole, whole_losses, whole_batches), (chunked, chunked_losses, chunks) = trained
        assert all(torch.allclose(whole[k], chunked[k], atol=1e-6) for k in whole)
        assert torch.allclose(torch.tensor(whole_losses), torch.tensor(chunked_losses), atol=1e-6)
        assert whole_batches == [min(32, len(rows))] * 10
        assert chunks == ([8] * 4 if len(rows) > 32 else [8, 8, 4]) * 10


def test_state_files_hold_weights_and_know_what_they_are(tmp_path):
    trainer = Trainer(fresh(), Recipe(lr=1e-3, batch_size=8))
    trainer.train(torch.randn(16, 2), None, 2)
    trainer.save_state(tmp_path / "s.safetensors")
    trainer.adapter.save(tmp_path / "w.safetensors")
    assert is_state(tmp_path / "s.safetensors") and not is_state(tmp_path / "w.safetensors")
    weights = weights_from_state(tmp_path / "s.safetensors")
    assert weights.keys() == trainer.adapter.state_dict().keys()


def test_batches_cover_each_row_once_per_epoch():
    rows = torch.cat([batch_indices(step, 10, 4, seed=1) for step in range(5)])  # 20 rows = 2 epochs
    assert sorted(rows[:10].tolist()) == list(range(10)) and sorted(rows[10:].tolist()) == list(range(10))
    assert torch.equal(batch_indices(3, 10, 4, seed=1), batch_indices(3, 10, 4, seed=1))
    assert torch.equal(batch_indices(0, 10, 20, seed=1), torch.arange(10))  # full batch


def test_warmup_is_linear_in_images_seen():
    recipe = Recipe(lr=1.0, batch_size=10, warmup_images=100)
    assert [recipe.lr_at(i) for i in (0, 40, 90, 500)] == [0.1, 0.5, 1.0, 1.0]
    assert Recipe(lr=0.3, batch_size=10).lr_at(0) == 0.3


def test_ckpt_copies_a_states_weights_byte_for_byte_without_torch(tmp_path):
    trainer = Trainer(fresh(), Recipe(lr=1e-3, batch_size=8))
    trainer.train(torch.randn(16, 2), None, 2)
    trainer.save_state(tmp_path / "s.safetensors", {"model": "toy", "budget_mi": 1e-5})
    extract_weights(str(tmp_path / "s.safetensors"), str(tmp_path / "w.safetensors"))
    weights, expected = load_tensors(tmp_path / "w.safetensors"), trainer.adapter.state_dict()
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[k], expected[k]) and weights[k].dtype == expected[k].dtype for k in expected)
    assert not is_state(tmp_path / "w.safetensors")
    assert load_metadata(tmp_path / "w.safetensors") == {"model": "toy", "budget_mi": "1e-05", "step": "2",
                                                         "images_seen": "16"}
    # the extract_selftrained job's imports and set-up: a start-up of Python's, not torch's
    job = ("import sys, neon_steps.stage, neon_steps.ckpt; neon_steps.stage.configure_torch(1); "
           "print('torch' in sys.modules)")
    imported = subprocess.run([sys.executable, "-c", job],
                              capture_output=True, text=True, check=True, cwd=REPO)
    assert imported.stdout.strip() == "False"
