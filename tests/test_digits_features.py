"""The digits' feature space: the stored split, the CNN registered with torch-fidelity, and the
sanity of FID / precision / recall in it (real held-out digits score well, noise does not)."""
import pytest
import torch
import torch_fidelity
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from neon_steps import data, metrics
from neon_steps.io import load_tensors
from neon_steps.metrics import digits, extraction

DATASET = {"kind": "digits", "heldout": 297, "split_seed": 0,
           "reference": {"classifier": {"epochs": 30, "seed": 0}}}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """The data set artifact, the trained classifier and the reference, as the rules make them."""
    from neon_steps.classifier import train
    from neon_steps.dataset import store_dataset
    from neon_steps.reference import build_reference

    folder = tmp_path_factory.mktemp("digits")
    paths = {k: folder / f"{k}.safetensors" for k in ("data", "classifier", "reference")}
    store_dataset("digits", DATASET, paths["data"])
    train("digits", DATASET["reference"]["classifier"], paths["data"], paths["classifier"])
    build_reference("digits", DATASET, paths["reference"], paths["data"], paths["classifier"])
    return paths


def test_the_split_is_fixed_stratified_and_disjoint(stored):
    split = load_tensors(stored["data"])
    assert split["train_images"].shape == (1500, 1, 8, 8) and split["heldout_images"].shape == (297, 1, 8, 8)
    assert split["train_images"].dtype == torch.uint8 and split["train_labels"].dtype == torch.int64
    counts = torch.bincount(split["heldout_labels"], minlength=10)
    assert counts.tolist() == [30] * 7 + [29] * 3
    # The 17 gray levels 0..16, scaled to 0..255, and nothing else.
    levels = torch.unique(torch.cat([split["train_images"], split["heldout_images"]]).flatten())
    assert torch.equal(levels, data.digits_to_uint8(torch.arange(17)))
    assert torch.equal(data.uint8_to_digits(levels), torch.arange(17))
    # All 1,797 images, each in exactly one part: no held-out image is also a training image.
    from sklearn.datasets import load_digits

    assert len(split["train_labels"]) + len(split["heldout_labels"]) == len(load_digits().target)
    train = {bytes(x.numpy()) + bytes([y]) for x, y in zip(split["train_images"], split["train_labels"])}
    held = [bytes(x.numpy()) + bytes([y]) for x, y in zip(split["heldout_images"], split["heldout_labels"])]
    assert sum(h in train for h in held) <= 2  # load_digits has a few exact duplicates
    again = data.digits(DATASET)
    assert torch.equal(again["heldout_images"], split["heldout_images"])
    other = data.digits({**DATASET, "split_seed": 1})
    assert not torch.equal(other["heldout_images"], split["heldout_images"])


def test_the_classifier_recognises_held_out_digits(stored):
    import json

    from neon_steps.io import load_metadata

    accuracy = json.loads(load_metadata(stored["classifier"])["accuracy"])
    assert accuracy["heldout"] > 0.95
    net = digits.load(stored["classifier"])
    images, labels = data.load_split(stored["data"], "heldout")
    assert digits.accuracy(net, images, labels) == pytest.approx(accuracy["heldout"])


def test_classifier_training_is_deterministic():
    split = data.digits(DATASET)
    images, labels = split["train_images"][:300], split["train_labels"][:300]
    a = digits.train_classifier(images, labels, {"epochs": 2, "seed": 5})
    b = digits.train_classifier(images, labels, {"epochs": 2, "seed": 5})
    c = digits.train_classifier(images, labels, {"epochs": 2, "seed": 6})
    for name, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[name])
    assert not torch.equal(a.conv1.weight, c.conv1.weight)


def test_the_reference_is_the_train_split_in_feature_space(stored):
    ref = load_tensors(stored["reference"])
    assert ref["features"].shape == (1500, 64) and ref["heldout_features"].shape == (297, 64)
    assert torch.allclose(ref["mu"], ref["features"].mean(0))
    assert torch.allclose(ref["sigma"], torch.cov(ref["features"].T))


def test_held_out_real_digits_score_well(stored):
    ref = load_tensors(stored["reference"])
    scores = metrics.score(ref["heldout_features"], ref)
    assert scores["fid"] < 10  # 4.6 here; a 297-image sample of the train split itself: ~4
    assert scores["precision"] > 0.85 and scores["recall"] > 0.85


def test_noise_scores_badly(stored):
    ref = load_tensors(stored["reference"])
    noise = torch.randint(0, 256, (1000, 1, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    scores = metrics.score(metrics.features(DATASET, noise, stored["classifier"]), ref)
    assert scores["fid"] > 100 and scores["precision"] < 0.05


def test_degraded_digits_score_worse_than_clean_ones(stored):
    ref = load_tensors(stored["reference"])
    images, _ = data.load_split(stored["data"], "heldout")
    noisy = (images.float() + 60 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0)))
    noisy = noisy.clamp(0, 255).to(torch.uint8)
    clean = metrics.score(ref["heldout_features"], ref)
    degraded = metrics.score(metrics.features(DATASET, noisy, stored["classifier"]), ref)
    assert degraded["fid"] > 2 * clean["fid"] and degraded["precision"] < clean["precision"]


def test_one_class_only_has_precision_without_recall(stored):
    ref = load_tensors(stored["reference"])
    images, labels = data.load_split(stored["data"], "train")
    scores = metrics.score(metrics.features(DATASET, images[labels == 3], stored["classifier"]), ref)
    assert scores["fid"] > 100 and scores["precision"] > 0.9 and scores["recall"] < 0.2


def test_registered_with_torch_fidelity_once():
    digits.register()
    digits.register()  # a second registration is a no-op, not torch-fidelity's error
    assert FEATURE_EXTRACTORS_REGISTRY[digits.NAME] is digits.DigitsFeatureExtractor


def test_calculate_metrics_with_the_registered_extractor_agrees(stored):
    """torch-fidelity's own calculate_metrics, given the extractor by name, gives the scores the
    workflow computes from stored features."""
    digits.register()
    held, _ = data.load_split(stored["data"], "heldout")
    train, _ = data.load_split(stored["data"], "train")
    result = torch_fidelity.calculate_metrics(
        input1=extraction.Images(held), input2=extraction.Images(train), fid=True, prc=True, prc_neighborhood=5,
        feature_extractor=digits.NAME, feature_extractor_weights_path=str(stored["classifier"]),
        cuda=False, save_cpu_ram=True, cache=False, verbose=False)
    ours = metrics.score(load_tensors(stored["reference"])["heldout_features"], load_tensors(stored["reference"]))
    assert result["frechet_inception_distance"] == pytest.approx(ours["fid"], rel=1e-3)
    assert result["precision"] == pytest.approx(ours["precision"], abs=1e-6)
    assert result["recall"] == pytest.approx(ours["recall"], abs=1e-6)


def test_the_extractor_refuses_what_is_not_a_uint8_digit(stored):
    with pytest.raises(ValueError, match="uint8"):
        digits.extract(torch.zeros(4, 1, 8, 8), stored["classifier"])
    extractor = digits.DigitsFeatureExtractor(digits.NAME, ["pool"],
                                              feature_extractor_weights_path=str(stored["classifier"]))
    with pytest.raises(ValueError, match=r"\[N,1,8,8\]"):
        extractor(torch.zeros(4, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="feature_extractor_weights_path"):
        digits.DigitsFeatureExtractor(digits.NAME, ["pool"])
