"""Stage `reference` (rule reference_statistics): a data set's reference statistics and real features,
computed once and kept as a workflow artifact (not in torch-fidelity's name-keyed cache, which goes
stale silently)."""


from neon_steps import metrics
from neon_steps.io import save_tensors


def build_reference(name: str, dataset: dict, out: str, data_path: str | None = None,
                    extractor: str | None = None) -> None:
    """Image data sets need the stored data set and the feature extractor's weights."""
    ref = metrics.reference(dataset, data_path, extractor, where=f"datasets.{name}")
    save_tensors(out, ref, {"dataset": name, "kind": dataset["kind"]})
