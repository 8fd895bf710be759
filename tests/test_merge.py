"""The Neon merge θ_r − w·(θ_s − θ_r): values, bits, layouts, validation, atomicity, command line."""
import hashlib
import json
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from neon_steps import filehash, merge
from neon_steps.checkpoints import SafetensorsCheckpoint, open_checkpoint
from neon_steps.io import load_metadata
from neon_steps.cli import main
from neon_steps.errors import MergeError
from neon_steps.extrapolation import merge_state_dicts
from neon_steps.merge import merge_checkpoints

REPO = Path(__file__).resolve().parents[1]


class TinyNet(torch.nn.Module):
    """A module pickled whole, as EDM's .pkl files do: loading it needs this code."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, 2)


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (a.dtype == b.dtype and a.shape == b.shape
            and torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8)))


def reference(r: torch.Tensor, s: torch.Tensor, w: float) -> torch.Tensor:
    """θ_r − w·(θ_s − θ_r) in float64, rounded once to the inputs' dtype."""
    return (r.double() - w * (s.double() - r.double())).to(r.dtype)


def pair() -> tuple[dict, dict]:
    """A base and a self-trained state dict with every kind of tensor the rule tells apart."""
    g = torch.Generator().manual_seed(0)
    base = {
        "conv.weight": torch.randn(4, 3, 3, 3, generator=g),
        "attn.qkv.weight": torch.randn(24, 8, generator=g).bfloat16(),
        "head.weight": torch.randn(5, 7, generator=g).half(),
        "bn.running_mean": torch.randn(4, generator=g),
        "bn.num_batches_tracked": torch.tensor(100),
        "attn.mask": torch.full((4, 4), float("-inf")).triu(1),
        "attn.causal": torch.ones(4, 4, dtype=torch.bool).tril(),
        "pos.ids": torch.arange(6, dtype=torch.int32),
        "scale": torch.tensor(0.5),
    }
    selftrained = {k: v + 0.01 * torch.randn(v.shape, generator=g).to(v.dtype) if v.is_floating_point() else v + 1
                   for k, v in base.items()}
    selftrained["attn.mask"] = torch.full((4, 4), float("-inf")).triu(2)
    selftrained["attn.causal"] = ~base["attn.causal"]
    return base, selftrained


@pytest.fixture(autouse=True)
def hash_cache(tmp_path_factory, monkeypatch):
    """Each test its own cache of digests (not the user's, and not in tmp_path, which tests list)."""
    folder = tmp_path_factory.mktemp("hash-cache")
    monkeypatch.setenv(filehash.CACHE_ENV, str(folder))
    return folder


@pytest.fixture
def files(tmp_path):
    base, selftrained = pair()
    save_file(base, tmp_path / "base.safetensors", metadata={"family": "diffusion"})
    save_file(selftrained, tmp_path / "selftrained.safetensors")
    return tmp_path / "base.safetensors", tmp_path / "selftrained.safetensors", base, selftrained


def listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# -- values and bits ----------------------------------------------------------------------------

def test_positive_w_moves_away_from_the_selftrained_model():
    r, s = {"x": torch.tensor([1.0, 4.0])}, {"x": torch.tensor([2.0, 3.0])}
    assert merge_state_dicts(r, s, 1.5)["x"].tolist() == [-0.5, 5.5]      # (1 + w)·r − w·s
    assert merge_state_dicts(r, s, -0.5)["x"].tolist() == [1.5, 3.5]      # halfway to θ_s


def test_merged_tensors_match_a_float64_reference(files, tmp_path):
    base_path, selftrained_path, base, selftrained = files
    merge_checkpoints(base_path, selftrained_path, [1.5], [tmp_path / "out.safetensors"])
    out = load_file(tmp_path / "out.safetensors")
    for name in ("conv.weight", "attn.qkv.weight", "head.weight", "bn.running_mean", "scale"):
        assert same_bits(out[name], reference(base[name], selftrained[name], 1.5)), name


def test_w0_is_the_base_and_w_minus_1_the_selftrained_model_bit_for_bit(tmp_path):
    dtypes = (torch.float32, torch.bfloat16, torch.float16)
    base = {f"x.{i}": torch.tensor([-0.0, 0.0, -0.0, 1.0, 2.0], dtype=dt) for i, dt in enumerate(dtypes)}
    selftrained = {k: torch.tensor([-0.0, -0.0, 0.0, -0.0, 3.0], dtype=v.dtype) for k, v in base.items()}
    save_file(base, tmp_path / "r.safetensors")
    save_file(selftrained, tmp_path / "s.safetensors")
    merge_checkpoints(tmp_path / "r.safetensors", tmp_path / "s.safetensors", [0, -1],
                      [tmp_path / "w0.safetensors", tmp_path / "w-1.safetensors"])
    at_0, at_minus_1 = load_file(tmp_path / "w0.safetensors"), load_file(tmp_path / "w-1.safetensors")
    for name, r in base.items():
        s = selftrained[name]
        assert same_bits(at_0[name], r) and same_bits(at_minus_1[name], s)
        assert same_bits(merge_state_dicts(base, selftrained, 0)[name], r)
        assert same_bits(merge_state_dicts(base, selftrained, -1)[name], s)
        # why these points are special-cased: the arithmetic turns some −0.0 into +0.0
        assert not same_bits((1 + 0) * r - 0 * s, r) and not same_bits((1 - 1) * r + 1 * s, s)


def test_fp16_is_computed_in_fp32_where_naive_fp16_overflows_or_drifts():
    r = torch.tensor([6000.0, 4000.0, 1000.0], dtype=torch.float16)
    s = torch.tensor([5000.0, 3990.0, 999.5], dtype=torch.float16)
    naive = (1 + 10.0) * r - 10.0 * s
    assert naive[0].isinf() and naive[1:].tolist() == [4096.0, 1008.0]
    ours = merge_state_dicts({"x": r}, {"x": s}, 10.0)["x"]
    assert ours.tolist() == [16000.0, 4100.0, 1005.0] and same_bits(ours, reference(r, s, 10.0))


def test_fp16_and_bf16_round_once_from_fp32():
    g = torch.Generator().manual_seed(1)
    for dtype in (torch.float16, torch.bfloat16):
        r = torch.randn(10_000, generator=g).to(dtype)
        s = (r.float() + 0.05 * torch.randn(10_000, generator=g)).to(dtype)
        ours = merge_state_dicts({"x": r}, {"x": s}, 1.5)["x"]
        assert same_bits(ours, (r.float() + 1.5 * (r.float() - s.float())).to(dtype))
        assert same_bits(ours, reference(r, s, 1.5))
        assert not torch.equal((1 + 1.5) * r - 1.5 * s, ours)  # arithmetic in 16 bits drifts


def test_float64_and_float8_are_merged_too(tmp_path):
    r = torch.tensor([1.0, -2.0, 0.5])
    s = torch.tensor([0.5, -2.5, 0.25])
    base = {"f64": r.double(), "f8": r.to(torch.float8_e4m3fn)}
    selftrained = {"f64": s.double(), "f8": s.to(torch.float8_e4m3fn)}
    save_file(base, tmp_path / "r.safetensors")
    save_file(selftrained, tmp_path / "s.safetensors")
    merge_checkpoints(tmp_path / "r.safetensors", tmp_path / "s.safetensors", [2], [tmp_path / "out.safetensors"])
    out = load_file(tmp_path / "out.safetensors")
    assert out["f64"].tolist() == [2.0, -1.0, 1.0]
    assert out["f8"].dtype == torch.float8_e4m3fn and out["f8"].float().tolist() == [2.0, -1.0, 1.0]


def test_streaming_in_chunks_equals_the_in_memory_merge(files, tmp_path, monkeypatch):
    base_path, selftrained_path, base, selftrained = files
    monkeypatch.setattr(merge, "CHUNK_BYTES", 40)  # chunks of 10, 20 elements: odd splits
    merge_checkpoints(base_path, selftrained_path, [2.5], [tmp_path / "out.safetensors"])
    out, expected = load_file(tmp_path / "out.safetensors"), merge_state_dicts(base, selftrained, 2.5)
    assert out.keys() == expected.keys() and all(same_bits(out[k], expected[k]) for k in out)


def test_an_inf_or_nan_found_late_in_a_tensor_has_it_written_again_as_the_bases(tmp_path, monkeypatch):
    """The inputs are not scanned before merging: a result that is not finite is what says that a
    tensor holds inf or NaN, after some of its chunks were written to every output."""
    monkeypatch.setattr(merge, "CHUNK_BYTES", 64)  # 16 fp32 elements a chunk
    g = torch.Generator().manual_seed(3)
    base = {name: torch.randn(100, generator=g) for name in ("a", "late_inf", "late_nan", "z")}
    selftrained = {name: t + 0.01 for name, t in base.items()}
    base["late_inf"][90] = float("inf")
    selftrained["late_nan"][95] = float("nan")
    save_file(base, tmp_path / "r.safetensors")
    save_file(selftrained, tmp_path / "s.safetensors")
    ws = [1.5, 0, -1, -0.5]
    outs = [tmp_path / f"w{w}.safetensors" for w in ws]
    [report, *_] = merge_checkpoints(tmp_path / "r.safetensors", tmp_path / "s.safetensors", ws, outs)
    assert sorted(report.copied) == ["late_inf", "late_nan"]
    for w, out in zip(ws, outs):
        merged, expected = load_file(out), merge_state_dicts(base, selftrained, w)
        assert all(same_bits(merged[k], expected[k]) for k in base), w
        assert same_bits(merged["late_nan"], base["late_nan"]) and same_bits(merged["late_inf"], base["late_inf"])


def test_an_overflow_late_in_a_tensor_fails_the_merge(tmp_path, monkeypatch):
    monkeypatch.setattr(merge, "CHUNK_BYTES", 8)
    base = {"x": torch.ones(40, dtype=torch.float16)}
    selftrained = {"x": torch.ones(40, dtype=torch.float16)}
    base["x"][37], selftrained["x"][37] = 60000.0, -60000.0
    save_file(base, tmp_path / "r.safetensors")
    save_file(selftrained, tmp_path / "s.safetensors")
    with pytest.raises(MergeError, match=r"merged tensor 'x' is not finite at w=1.5 \(float16 overflow\)"):
        merge_checkpoints(tmp_path / "r.safetensors", tmp_path / "s.safetensors", [0.01, 1.5],
                          [tmp_path / "a.safetensors", tmp_path / "b.safetensors"])
    assert not (tmp_path / "a.safetensors").exists() and not (tmp_path / "b.safetensors").exists()


# -- what is copied from the base ---------------------------------------------------------------

def test_integer_bool_and_non_finite_tensors_are_the_bases(files, tmp_path):
    base_path, selftrained_path, base, selftrained = files
    [report] = merge_checkpoints(base_path, selftrained_path, [1.5], [tmp_path / "out.safetensors"])
    out = load_file(tmp_path / "out.safetensors")
    kept = {"bn.num_batches_tracked", "attn.mask", "attn.causal", "pos.ids"}
    assert set(report.copied) == kept and report.merged == len(base) - len(kept)
    assert all(same_bits(out[name], base[name]) for name in kept)
    nan_in_selftrained = {**selftrained, "scale": torch.tensor(float("nan"))}
    assert same_bits(merge_state_dicts(base, nan_in_selftrained, 1.5)["scale"], base["scale"])


def test_exclude_globs_and_keep_base_copy_from_the_base(files, tmp_path):
    base_path, selftrained_path, base, selftrained = files
    keep = {"scale"}.__contains__
    [report] = merge_checkpoints(base_path, selftrained_path, [1.5], [tmp_path / "out.safetensors"],
                                 exclude=["bn.*", "head.*"], keep_base=keep)
    out = load_file(tmp_path / "out.safetensors")
    in_memory = merge_state_dicts(base, selftrained, 1.5, keep_base=keep, exclude=["bn.*", "head.*"])
    for name in ("bn.running_mean", "head.weight", "scale"):
        assert name in report.copied and same_bits(out[name], base[name]) and in_memory[name] is base[name]
    assert same_bits(out["conv.weight"], reference(base["conv.weight"], selftrained["conv.weight"], 1.5))


# -- several w, layouts, metadata ---------------------------------------------------------------

def test_several_w_read_the_inputs_once_and_equal_separate_runs(files, tmp_path, monkeypatch):
    base_path, selftrained_path, base, _ = files
    reads = []
    original = SafetensorsCheckpoint.read
    monkeypatch.setattr(SafetensorsCheckpoint, "read", lambda self, name: reads.append(name) or original(self, name))
    ws = [0.5, 1, 1.5]
    outs = [tmp_path / "one-pass" / f"w{w}.safetensors" for w in ws]
    merge_checkpoints(base_path, selftrained_path, ws, outs)
    assert sorted(reads) == sorted(list(base) * 2)
    for w, out in zip(ws, outs):
        alone = tmp_path / "alone" / out.name
        merge_checkpoints(base_path, selftrained_path, [w], [alone])
        assert json.loads(load_metadata(out)["w"]) == w
        assert out.read_bytes() == alone.read_bytes()


def test_metadata_holds_w_the_inputs_and_their_sha256(files, tmp_path):
    base_path, selftrained_path, _, _ = files
    merge_checkpoints(base_path, selftrained_path, [-0.25], [tmp_path / "out.safetensors"],
                      extra_metadata={"model": "toy", "budget_mi": 0.5})
    meta = load_metadata(tmp_path / "out.safetensors")
    assert meta["w"] == "-0.25" and meta["base"] == str(base_path) and meta["selftrained"] == str(selftrained_path)
    assert meta["base_sha256"] == hashlib.sha256(base_path.read_bytes()).hexdigest()
    assert meta["selftrained_sha256"] == hashlib.sha256(selftrained_path.read_bytes()).hexdigest()
    assert meta["family"] == "diffusion" and meta["model"] == "toy" and meta["budget_mi"] == "0.5"


def counting_hashes(monkeypatch) -> list[list[str]]:
    """The files each real hashing reads (digests that the cache supplies read none)."""
    hashed, original = [], filehash._hash
    monkeypatch.setattr(filehash, "_hash", lambda files, stop: hashed.append([f.name for f in files])
                        or original(files, stop))
    return hashed


def test_the_hashes_are_cached_per_file_identity_and_redone_when_a_file_changes(files, tmp_path, monkeypatch,
                                                                                hash_cache):
    base_path, selftrained_path, base, _ = files
    monkeypatch.setattr(filehash, "RACY_NS", 0)  # the files were written a moment ago; see the next test
    hashed = counting_hashes(monkeypatch)
    out = tmp_path / "out.safetensors"

    def merged_hashes() -> tuple[str, str]:
        merge_checkpoints(base_path, selftrained_path, [1.5], [out])
        meta = load_metadata(out)
        return meta["base_sha256"], meta["selftrained_sha256"]

    truth = tuple(hashlib.sha256(path.read_bytes()).hexdigest() for path in (base_path, selftrained_path))
    assert merged_hashes() == truth and sorted(hashed) == [["base.safetensors"], ["selftrained.safetensors"]]
    assert len(list(hash_cache.glob("*.json"))) == 2
    hashed.clear()
    assert merged_hashes() == truth and hashed == []  # the cache, for both
    assert main([str(base_path), str(selftrained_path), "--w", "2", "--out", str(out)]) == 0
    assert load_metadata(out)["base_sha256"] == truth[0] and hashed == []  # and for neon-merge's early start

    # Rewritten in place, the same size, its mtime put back: the ctime tells.
    before = base_path.stat()
    save_file({**base, "scale": torch.tensor(0.75)}, base_path, metadata={"family": "diffusion"})
    os.utime(base_path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert base_path.stat().st_size == before.st_size and base_path.stat().st_mtime_ns == before.st_mtime_ns
    changed = hashlib.sha256(base_path.read_bytes()).hexdigest()
    assert merged_hashes() == (changed, truth[1]) and hashed == [["base.safetensors"]]
    hashed.clear()
    replaced = tmp_path / "new.safetensors"  # replaced by another file: another inode
    replaced.write_bytes(selftrained_path.read_bytes())
    os.replace(replaced, selftrained_path)
    assert merged_hashes() == (changed, truth[1]) and hashed == [["selftrained.safetensors"]]
    hashed.clear()
    assert merged_hashes() == (changed, truth[1]) and hashed == []


def test_neon_merge_hashes_each_input_once_from_before_torch_is_imported(files, tmp_path, monkeypatch):
    base_path, _, _, selftrained = files
    index = write_shards(tmp_path / "selftrained", selftrained, per_shard=4)
    hashed = counting_hashes(monkeypatch)
    for given in (index, index.parent):
        hashed.clear()
        assert main([str(base_path), str(given), "--w", "1.5", "--out", str(tmp_path / "out.safetensors")]) == 0
        shards = [f"model-0000{k}-of-00003.safetensors" for k in (1, 2, 3)]
        assert sorted(hashed) == [["base.safetensors"], ["model.safetensors.index.json", *shards]]
        everything = b"".join(path.read_bytes() for path in [index, *sorted(index.parent.glob("model-*"))])
        digest = hashlib.sha256(everything).hexdigest()
        assert load_metadata(tmp_path / "out.safetensors")["selftrained_sha256"] == digest


def test_a_file_changed_a_moment_ago_is_not_cached_and_no_cache_can_be_asked_for(files, tmp_path, monkeypatch,
                                                                                   hash_cache):
    """A file may change again within its timestamps' granularity, unseen (as git's racy entries)."""
    base_path, selftrained_path, _, _ = files
    hashed = counting_hashes(monkeypatch)
    for _ in range(2):
        merge_checkpoints(base_path, selftrained_path, [1.5], [tmp_path / "out.safetensors"])
    assert len(hashed) == 4 and not list(hash_cache.glob("*.json"))
    monkeypatch.setattr(filehash, "RACY_NS", 0)
    monkeypatch.setenv(filehash.CACHE_ENV, "")  # off
    for _ in range(2):
        merge_checkpoints(base_path, selftrained_path, [1.5], [tmp_path / "out.safetensors"])
    assert len(hashed) == 8 and not list(hash_cache.glob("*.json"))


def test_a_damaged_cache_entry_is_hashed_again(files, tmp_path, monkeypatch, hash_cache):
    base_path, selftrained_path, _, _ = files
    monkeypatch.setattr(filehash, "RACY_NS", 0)
    merge_checkpoints(base_path, selftrained_path, [1.5], [tmp_path / "out.safetensors"])
    for entry in hash_cache.glob("*.json"):
        entry.write_text(entry.read_text().replace('"sha256": "', '"sha256": "0'))  # 65 digits
    hashed = counting_hashes(monkeypatch)
    merge_checkpoints(base_path, selftrained_path, [1.5], [tmp_path / "out.safetensors"])
    assert len(hashed) == 2
    digest = hashlib.sha256(base_path.read_bytes()).hexdigest()
    assert load_metadata(tmp_path / "out.safetensors")["base_sha256"] == digest


def test_the_output_header_is_padded_and_every_tensor_aligned(files, tmp_path):
    base_path, selftrained_path, base, _ = files
    merge_checkpoints(base_path, selftrained_path, [1.5], [tmp_path / "out.safetensors"])
    raw = (tmp_path / "out.safetensors").read_bytes()
    length = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + length])
    assert length % 8 == 0 and raw[8:8 + length].decode().endswith(("}", " "))
    spans = sorted(entry["data_offsets"] for name, entry in header.items() if name != "__metadata__")
    assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # no holes
    assert spans[-1][1] == len(raw) - 8 - length
    for name, entry in header.items():
        if name != "__metadata__":
            assert entry["data_offsets"][0] % base[name].element_size() == 0, name


def write_shards(folder: Path, tensors: dict, per_shard: int) -> Path:
    """A Hugging Face sharded checkpoint: model-0000k-of-0000n.safetensors and their index."""
    folder.mkdir()
    names = list(tensors)
    groups = [names[i:i + per_shard] for i in range(0, len(names), per_shard)]
    weight_map = {}
    for k, group in enumerate(groups, 1):
        shard = f"model-{k:05d}-of-{len(groups):05d}.safetensors"
        save_file({name: tensors[name] for name in group}, folder / shard)
        weight_map.update(dict.fromkeys(group, shard))
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    return index


def test_sharded_inputs_by_index_or_folder(files, tmp_path):
    base_path, _, base, selftrained = files
    index = write_shards(tmp_path / "selftrained", selftrained, per_shard=4)
    expected = merge_state_dicts(base, selftrained, 1.5)
    for given in (index, index.parent):
        out = tmp_path / f"from-{given.name}.safetensors"
        merge_checkpoints(base_path, given, [1.5], [out])
        merged = load_file(out)
        assert all(same_bits(merged[k], expected[k]) for k in expected)
    shards = sorted(index.parent.glob("model-*.safetensors"))
    assert len(shards) == 3
    everything = index.read_bytes() + b"".join(shard.read_bytes() for shard in shards)
    assert load_metadata(out)["selftrained_sha256"] == hashlib.sha256(everything).hexdigest()


def test_large_outputs_are_sharded_with_an_index(files, tmp_path):
    base_path, selftrained_path, base, selftrained = files
    [report] = merge_checkpoints(base_path, selftrained_path, [1.5], [tmp_path / "out" / "neon.safetensors"],
                                 shard_size=500)
    index = tmp_path / "out" / "neon.safetensors.index.json"
    assert report.files[-1] == index and not (tmp_path / "out" / "neon.safetensors").exists()
    content = json.loads(index.read_text())
    shards = sorted({tmp_path / "out" / shard for shard in content["weight_map"].values()})
    assert list(report.files[:-1]) == shards and len(shards) > 2
    assert content["metadata"]["total_size"] == sum(t.nbytes for t in base.values())
    assert content["metadata"]["w"] == "1.5"
    for shard in shards:
        tensors = load_file(shard)
        assert sum(t.nbytes for t in tensors.values()) <= 500 or len(tensors) == 1
        assert all(content["weight_map"][name] == shard.name for name in tensors)
    expected = merge_state_dicts(base, selftrained, 1.5)
    with open_checkpoint(index) as merged:  # the index reads back as one checkpoint
        assert merged.specs.keys() == expected.keys()
        assert all(same_bits(merged.read(name), expected[name]) for name in expected)


def test_nested_pt_with_dataparallel_prefix(files, tmp_path):
    base_path, _, base, selftrained = files
    wrapped = {f"module.{k}": v for k, v in selftrained.items()}
    torch.save({"ema": wrapped, "model": {"x": torch.zeros(1)}, "step": 7}, tmp_path / "st.pt")
    torch.save({"ckpt": {"ema": wrapped}}, tmp_path / "deep.pt")
    expected = merge_state_dicts(base, selftrained, 1.5)
    for path, key in ((tmp_path / "st.pt", "ema"), (tmp_path / "deep.pt", "ckpt.ema")):
        out = tmp_path / f"{key}.safetensors"
        merge_checkpoints(base_path, path, [1.5], [out], key=key)
        merged = load_file(out)
        assert all(same_bits(merged[k], expected[k]) for k in expected)
    with pytest.raises(MergeError, match=r"no key 'state_dict' .*keys: ema, model, step"):
        merge_checkpoints(base_path, tmp_path / "st.pt", [1], [tmp_path / "x.safetensors"], key="state_dict")
    with pytest.raises(MergeError, match=r"no tensors at the top level; choose .*--key .*keys: ema, model, step"):
        merge_checkpoints(base_path, tmp_path / "st.pt", [1], [tmp_path / "x.safetensors"])


def test_pickles_that_need_code_are_refused_unless_allowed(files, tmp_path):
    base_path, _, _, _ = files
    net = TinyNet()
    torch.save({"ema": dict(net.state_dict())}, tmp_path / "base.pt")
    with open(tmp_path / "edm.pkl", "wb") as f:
        pickle.dump({"ema": net}, f)
    torch.save({"ema": net}, tmp_path / "module.pt")
    out = tmp_path / "out.safetensors"
    with pytest.raises(MergeError, match=r"edm.pkl is a pickle, which runs code.*--allow-pickle"):
        merge_checkpoints(tmp_path / "base.pt", tmp_path / "edm.pkl", [1], [out], key="ema")
    with pytest.raises(MergeError, match=r"module.pt needs code to load \(it pickles \S*TinyNet\).*--allow-pickle"):
        merge_checkpoints(tmp_path / "base.pt", tmp_path / "module.pt", [1], [out], key="ema")
    assert not out.exists()
    for pickled in ("edm.pkl", "module.pt"):
        merge_checkpoints(tmp_path / "base.pt", tmp_path / pickled, [1], [out], key="ema", allow_pickle=True)
        assert all(same_bits(t, net.state_dict()[k]) for k, t in load_file(out).items())  # θ_s = θ_r: w moves nothing


@pytest.mark.parametrize("name, content, message", [
    ("page.pt", b"<!DOCTYPE html><html><body>Sign in</body></html>", r"page.pt: not a checkpoint: .*an HTML page"),
    ("notes.pkl", b"these are my notes\n",
     r"notes.pkl: not a checkpoint: neither a zip archive .*a pickle nor a safetensors file"),
    ("empty.pth", b"", r"empty.pth: not a checkpoint: the file is empty"),
])
def test_a_file_that_is_no_checkpoint_is_named_so_and_allow_pickle_is_not_suggested(files, tmp_path, name, content,
                                                                                    message):
    base_path = files[0]
    (tmp_path / name).write_bytes(content)
    for allow_pickle in (False, True):
        with pytest.raises(MergeError, match=message) as refused:
            merge_checkpoints(base_path, tmp_path / name, [1], [tmp_path / "out.safetensors"],
                              allow_pickle=allow_pickle)
        assert "allow-pickle" not in str(refused.value)
    assert not (tmp_path / "out.safetensors").exists()


# -- validation and atomicity -------------------------------------------------------------------

def test_layout_mismatches_are_named(files, tmp_path):
    base_path, _, base, selftrained = files
    broken = {k: v for k, v in selftrained.items() if k != "scale"}
    broken["extra.bias"] = torch.zeros(2)
    broken["conv.weight"] = selftrained["conv.weight"].reshape(4, 27)
    broken["head.weight"] = selftrained["head.weight"].float()
    save_file(broken, tmp_path / "broken.safetensors")
    with pytest.raises(MergeError) as error:
        merge_checkpoints(base_path, tmp_path / "broken.safetensors", [1], [tmp_path / "out.safetensors"])
    message = str(error.value)
    assert "\n" not in message and str(base_path) in message
    for part in ("only in", "'scale'", "'extra.bias'", "shapes differ: 'conv.weight' [4, 3, 3, 3] vs [4, 27]",
                 "dtypes differ: 'head.weight' float16 vs float32"):
        assert part in message
    with pytest.raises(MergeError, match="only in base: 'scale'"):
        merge_state_dicts(base, broken, 1)


@pytest.mark.parametrize("problem", ["same file", "symlink", "w count", "twice", "suffix", "nan w", "missing",
                                     "format"])
def test_bad_requests_are_refused_before_writing(files, tmp_path, problem):
    base_path, selftrained_path, _, _ = files
    (tmp_path / "link.safetensors").symlink_to(base_path)
    (tmp_path / "weights.npz").write_bytes(b"x")
    before = listing(tmp_path)
    ws, outs, inputs = [1.0], [tmp_path / "out.safetensors"], [base_path, selftrained_path]
    expected = {"same file": "is one of the inputs", "symlink": "is one of the inputs", "w count": "one output per w",
                "twice": "given twice", "suffix": "must end in .safetensors", "nan w": "finite",
                "missing": "no such file", "format": "unknown checkpoint format"}[problem]
    if problem == "same file":
        outs = [selftrained_path]
    elif problem == "symlink":
        outs = [tmp_path / "link.safetensors"]
    elif problem == "w count":
        ws = [1.0, 2.0]
    elif problem == "twice":
        ws, outs = [1.0, 2.0], [tmp_path / "out.safetensors", tmp_path / "." / "out.safetensors"]
    elif problem == "suffix":
        outs = [tmp_path / "out.pt"]
    elif problem == "nan w":
        ws = [float("nan")]
    elif problem == "missing":
        inputs = [tmp_path / "nope.safetensors", selftrained_path]
    elif problem == "format":
        inputs = [tmp_path / "weights.npz", selftrained_path]
    with pytest.raises(MergeError, match=expected):
        merge_checkpoints(*inputs, ws, outs)
    assert listing(tmp_path) == before


def test_a_non_finite_result_fails_the_whole_merge_and_keeps_old_outputs(tmp_path):
    base = {"ok": torch.ones(3, dtype=torch.float16), "big": torch.tensor([60000.0, 1.0], dtype=torch.float16)}
    selftrained = {"ok": torch.zeros(3, dtype=torch.float16), "big": torch.tensor([-60000.0, 1.0], dtype=torch.float16)}
    save_file(base, tmp_path / "r.safetensors")
    save_file(selftrained, tmp_path / "s.safetensors")
    (tmp_path / "w1.5.safetensors").write_bytes(b"an earlier result")
    before = listing(tmp_path)
    with pytest.raises(MergeError, match=r"merged tensor 'big' is not finite at w=1.5 \(float16 overflow\)"):
        merge_checkpoints(tmp_path / "r.safetensors", tmp_path / "s.safetensors", [-0.5, 1.5],
                          [tmp_path / "w-0.5.safetensors", tmp_path / "w1.5.safetensors"])
    assert listing(tmp_path) == before  # no output, no temporary file, the old result untouched
    with pytest.raises(MergeError, match="'big' is not finite"):
        merge_state_dicts(base, selftrained, 1.5)


def test_a_failure_mid_merge_leaves_no_shard_no_index_and_no_temporary(files, tmp_path, monkeypatch):
    base_path, selftrained_path, _, _ = files
    out = tmp_path / "out"
    out.mkdir()
    (out / "neon.safetensors.index.json").write_text("an earlier index")
    reads = []
    original = SafetensorsCheckpoint.read

    def failing_read(self, name):
        reads.append(name)
        if len(reads) == 9:
            raise OSError("disk went away")
        return original(self, name)

    monkeypatch.setattr(SafetensorsCheckpoint, "read", failing_read)
    with pytest.raises(OSError, match="disk went away"):
        merge_checkpoints(base_path, selftrained_path, [0.5, 1.5], [out / "neon.safetensors", out / "w1.5.safetensors"],
                          shard_size=500)
    assert listing(out) == {"neon.safetensors.index.json": b"an earlier index"}


# -- command line and Snakemake -----------------------------------------------------------------

def test_cli_writes_one_output_per_w_from_a_pattern(files, tmp_path, capsys):
    base_path, selftrained_path, base, selftrained = files
    code = main([str(base_path), str(selftrained_path), "--w", "-0.5", "1",
                 "--out", str(tmp_path / "neon_w{w}.safetensors"),
                 "--exclude", "bn.*", "--exclude", "scale", "--shard-size", "5GB"])
    assert code == 0
    for w in ("-0.5", "1"):
        merged = load_file(tmp_path / f"neon_w{w}.safetensors")
        expected = merge_state_dicts(base, selftrained, float(w), exclude=["bn.*", "scale"])
        assert all(same_bits(merged[k], expected[k]) for k in expected)
    assert "w=1:" in capsys.readouterr().err


def test_cli_shard_size_takes_units(files, tmp_path):
    base_path, selftrained_path, _, _ = files
    assert main([str(base_path), str(selftrained_path), "--w", "1", "--out", str(tmp_path / "a.safetensors"),
                 "--shard-size", "0.0005MB"]) == 0
    assert len(json.loads((tmp_path / "a.safetensors.index.json").read_text())["weight_map"]) == len(pair()[0])


@pytest.mark.parametrize("args, message", [
    (["--w", "1", "2", "--out", "neon.safetensors"], "need one --out per w or a {w} placeholder"),
    (["--w", "1", "--out", "base.safetensors"], "is one of the inputs"),
])
def test_cli_errors_are_one_line_with_exit_code_2(files, tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["base.safetensors", "selftrained.safetensors", *args])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("neon-merge: error: ") and err.count("\n") == 1 and message in err


def test_python_m_runs_the_cli_without_traceback(files, tmp_path):
    base_path, _, _, _ = files
    proc = subprocess.run([sys.executable, "-m", "neon_steps.cli", str(base_path), str(tmp_path / "nope.pt"),
                           "--w", "1", "--out", str(tmp_path / "out.safetensors")],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and proc.stderr == f"neon-merge: error: {tmp_path / 'nope.pt'}: no such file\n"


def test_the_command_starts_without_torch_and_shards_as_the_merge_does():
    """neon-merge hashes while torch is imported: its own module must not import torch."""
    from neon_steps import cli

    proc = subprocess.run([sys.executable, "-c", "import sys, neon_steps.cli; print('torch' in sys.modules)"],
                          capture_output=True, text=True, cwd=REPO, check=True)
    assert proc.stdout.strip() == "False"
    assert cli.DEFAULT_SHARD_SIZE == merge.DEFAULT_SHARD_SIZE


def test_help_explains_the_sign_of_w(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for part in ("θ_r − w·(θ_s − θ_r)", "w > 0       extrapolates away from SELF_TRAINED (Neon)",
                 "w = 0       writes BASE, bit for bit", "w = −1      writes SELF_TRAINED, bit for bit"):
        assert part in text


def test_the_rules_merge_keeps_the_adapters_buffers(tmp_path, capsys):
    """The rule's merge asks the model's adapter what is mergeable: the toy DDPM's noise schedule
    (a buffer) stays the base's even where θ_s's differs; its weights are merged."""
    from neon_steps.models import load_adapter

    model = {"adapter": "toy-diffusion", "arch": {"hidden": 8, "layers": 1, "timesteps": 50}}
    torch.manual_seed(0)
    base = load_adapter(model).state_dict()
    selftrained = {k: v + 0.5 for k, v in base.items()}  # buffers differ too
    save_file(base, tmp_path / "base.safetensors")
    save_file(selftrained, tmp_path / "selftrained.safetensors")
    merge.merge_point(model, str(tmp_path / "base.safetensors"), str(tmp_path / "selftrained.safetensors"),
                      [1.0, 2.0], [str(tmp_path / "w1.safetensors"), str(tmp_path / "w2.safetensors")])
    for w in (1.0, 2.0):
        merged = load_file(tmp_path / f"w{w:g}.safetensors")
        assert same_bits(merged["alpha_bar"], base["alpha_bar"])
        assert torch.allclose(merged["mlp.0.weight"], base["mlp.0.weight"] - w * 0.5, atol=1e-6)
    assert "w=2:" in capsys.readouterr().err
