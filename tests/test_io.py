import os
import stat

import pytest
import torch

from neon_steps.io import atomic_path, load_metadata, load_tensors, save_tensors, write_json


def test_atomic_write_leaves_nothing_on_failure_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text().strip().startswith("{") and '"a": 1' in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_outputs_are_readable_by_the_group_like_any_file(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    write_json(tmp_path / "x.json", {})
    assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == 0o666 & ~umask


def test_tensors_round_trip_with_metadata(tmp_path):
    save_tensors(tmp_path / "t.safetensors", {"x": torch.arange(3.0)}, {"w": 1.5, "name": "m"})
    assert torch.equal(load_tensors(tmp_path / "t.safetensors")["x"], torch.arange(3.0))
    assert load_metadata(tmp_path / "t.safetensors") == {"w": "1.5", "name": "m"}
