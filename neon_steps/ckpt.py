"""Stage `ckpt` (rule extract_selftrained): θ_s at budget B — the weights of a fine-tune state, without
the optimizer, in the base's layout, so the merge compares like with like. The tensors' bytes are
copied as they are: no torch import (the job starts in a fraction of a second) and no state held in
memory."""


from neon_steps.io import copy_tensors, load_metadata

KEPT_METADATA = ("model", "images_seen", "budget_mi", "step")


def extract_weights(state: str, out: str) -> None:
    meta = load_metadata(state)
    copy_tensors(state, out, lambda name: name.removeprefix("net.") if name.startswith("net.") else None,
                 {k: meta[k] for k in KEPT_METADATA if k in meta})
