"""S on disk: parts drawn by several jobs are the S one job draws, and the fine-tune reads the
same batches from the parts as from S in memory."""
import torch

from conftest import TOY_DDPM
from neon_steps.io import load_tensors
from neon_steps.models import load_adapter
from neon_steps.sample import sample_synthetic
from neon_steps.synthetic import InMemory, SyntheticSet, part_count, write_manifest, write_part
from neon_steps.training import Recipe, Trainer

SETTINGS = {"sizes": [1000], "seed": 1, "kappa": {"steps": 5}, "shard_size": 100}


def toy_model(**synthetic):
    return {"name": "toy", **TOY_DDPM, "synthetic": {**SETTINGS, **synthetic}}


def draw_S(tmp_path, name, size, **synthetic):
    """S of the toy drawn by its part jobs, as sample_synthetic runs them; the manifest's path."""
    model = toy_model(**synthetic)
    base = tmp_path / "base.safetensors"
    if not base.exists():
        load_adapter(model).save(base)
    folder = tmp_path / name
    parts = [str(folder / f"part{part}.safetensors") for part in range(part_count(model["synthetic"], size))]
    for part, file in enumerate(parts):
        sample_synthetic(model, size, part, str(base), file)
    write_manifest(folder / "manifest.json", parts)
    return folder / "manifest.json", parts


def test_S_drawn_by_several_jobs_is_S_drawn_by_one_bit_for_bit(tmp_path):
    one, [whole] = draw_S(tmp_path, "one", 1000)
    many, parts = draw_S(tmp_path, "many", 1000, images_per_job=300)  # 300, 300, 300, 100
    assert len(parts) == 4
    joined = torch.cat([load_tensors(p)["samples"] for p in parts])
    assert torch.equal(joined, load_tensors(whole)["samples"])
    assert torch.equal(SyntheticSet(many).all()[0], joined)
    assert not (tmp_path / "many/part0.safetensors.shards").exists()  # a finished part keeps no shards


def labelled_parts(tmp_path, sizes):
    """Image-shaped uint8 parts with labels, as an image model's S; and S whole in memory."""
    images = torch.randint(0, 256, (sum(sizes), 1, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(sum(sizes)) % 10
    files, first = [], 0
    for i, size in enumerate(sizes):
        files.append(str(tmp_path / f"part{i}.safetensors"))
        shards = images[first:first + size].split(7)  # written shard by shard
        write_part(files[-1], shards, size, labels[first:first + size], {"first": first})
        first += size
    write_manifest(tmp_path / "manifest.json", files)
    return SyntheticSet(tmp_path / "manifest.json"), images, labels


def test_rows_are_read_from_their_parts_in_the_batch_order(tmp_path):
    S, images, labels = labelled_parts(tmp_path, [30, 50, 20])
    assert len(S) == 100
    rows = torch.tensor([99, 0, 31, 30, 29, 75, 80, 1, 2, 3])  # across parts, unsorted, with runs
    got_images, got_labels = S.take(rows)
    assert torch.equal(got_images, images[rows]) and torch.equal(got_labels, labels[rows])


def test_training_on_S_from_disk_equals_training_on_S_in_memory(tmp_path):
    points = torch.randn(100, 2, generator=torch.Generator().manual_seed(1))
    write_part(tmp_path / "part0.safetensors", points[:60].split(25), 60, None, {})
    write_part(tmp_path / "part1.safetensors", points[60:].split(25), 40, None, {})
    write_manifest(tmp_path / "manifest.json", [str(tmp_path / f"part{i}.safetensors") for i in (0, 1)])
    trained = []
    for data, workers in ((InMemory(points), 0), (SyntheticSet(tmp_path / "manifest.json"), 0),
                          (SyntheticSet(tmp_path / "manifest.json"), 2)):
        torch.manual_seed(0)  # the same initial weights
        adapter = load_adapter(TOY_DDPM)
        Trainer(adapter, Recipe(lr=1e-3, batch_size=32, seed=5)).train(data, None, 12, loader_workers=workers)
        trained.append(adapter.state_dict())
    for other in trained[1:]:
        assert all(torch.equal(trained[0][k], other[k]) for k in trained[0])


def test_a_part_changed_after_its_manifest_is_named(tmp_path):
    import pytest

    from neon_steps.errors import NeonError

    labelled_parts(tmp_path, [10, 10])
    with open(tmp_path / "part1.safetensors", "ab") as f:
        f.write(b"more")
    with pytest.raises(NeonError, match="part1.safetensors: changed since .*manifest.json listed it; draw S again"):
        SyntheticSet(tmp_path / "manifest.json")
