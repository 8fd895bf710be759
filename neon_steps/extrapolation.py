"""Neon's extrapolation, one tensor at a time: θ = θ_r − w·(θ_s − θ_r) = (1 + w)·θ_r − w·θ_s.

θ_r is the base, θ_s the base fine-tuned on its own samples. w > 0 moves away from θ_s (Neon);
w = 0 is the base and w = −1 is θ_s, bit for bit. Learned floating-point tensors are merged
(fp16 and bf16 computed in fp32); integer and bool tensors, tensors holding inf or NaN in either
input, and the names the caller keeps are copied from the base. The arithmetic alone: reading and
writing checkpoints is neon_steps.merge's (streaming) and neon_steps.checkpoints' (formats).
"""
import fnmatch
import math
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

import torch

from neon_steps.checkpoints import TensorSpec
from neon_steps.config import fmt
from neon_steps.errors import MergeError

LERP_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)  # lerp computes fp16/bf16 in fp32


@dataclass(frozen=True)
class MergeRule:
    """Which tensors are merged: floating-point ones, finite in both inputs, neither excluded by a
    glob nor kept by the `keep_base` predicate. The others are copied from the base."""

    exclude: tuple[str, ...] = ()
    keep_base: Callable[[str], bool] | None = None

    def merges(self, name: str, base: torch.Tensor, selftrained: torch.Tensor) -> bool:
        return self.may_merge(name, base.dtype) and all_finite(base) and all_finite(selftrained)

    def may_merge(self, name: str, dtype: torch.dtype) -> bool:
        """The rule without its look at the values: merged if both inputs turn out finite."""
        return (dtype.is_floating_point
                and not any(fnmatch.fnmatchcase(name, pattern) for pattern in self.exclude)
                and not (self.keep_base and self.keep_base(name)))


def all_finite(tensor: torch.Tensor) -> bool:
    """No inf or NaN. One pass, no temporary: aminmax propagates NaN and finds ±inf at its ends."""
    if tensor.numel() == 0:
        return True
    low, high = torch.aminmax(tensor if tensor.dtype in LERP_DTYPES else tensor.float())
    return bool(torch.isfinite(low) & torch.isfinite(high))


def merge_into(out: torch.Tensor, base: torch.Tensor, selftrained: torch.Tensor, w: float, name: str) -> torch.Tensor:
    """out ← base + w·(base − selftrained), rounded once to out's dtype; w = 0 and w = −1 copy
    their input (the arithmetic would turn −0.0 into +0.0). Raises if the result is not finite."""
    lerp_into(out, base, selftrained, w)
    if not all_finite(out):
        raise overflow(name, w, out.dtype)
    return out


def lerp_into(out: torch.Tensor, base: torch.Tensor, selftrained: torch.Tensor, w: float) -> torch.Tensor:
    """`merge_into`'s arithmetic, unchecked. Where w is neither 0 nor −1, an inf or NaN in either
    input makes the result there inf or NaN: a finite result says that its inputs were finite."""
    if w == 0:
        out.copy_(base)
    elif w == -1:
        out.copy_(selftrained)
    elif out.dtype in LERP_DTYPES:
        torch.lerp(base, selftrained, -w, out=out)
    else:  # float8
        out.copy_(torch.lerp(base.float(), selftrained.float(), -w))
    return out


def overflow(name: str, w: float, dtype: torch.dtype) -> MergeError:
    return MergeError(f"merged tensor {name!r} is not finite at w={fmt(w)} ({_name(dtype)} overflow); "
                      f"exclude it or use a smaller |w|")


def check_same_layout(base: Mapping[str, TensorSpec], selftrained: Mapping[str, TensorSpec],
                      base_name: str = "base", selftrained_name: str = "selftrained") -> None:
    """Both inputs hold the same names with the same shapes and dtypes; else the first few differences."""
    common = [name for name in base if name in selftrained]
    differences = {
        f"only in {base_name}": [repr(name) for name in base if name not in selftrained],
        f"only in {selftrained_name}": [repr(name) for name in selftrained if name not in base],
        "shapes differ": [f"{name!r} {list(base[name].shape)} vs {list(selftrained[name].shape)}"
                          for name in common if base[name].shape != selftrained[name].shape],
        "dtypes differ": [f"{name!r} {_name(base[name].dtype)} vs {_name(selftrained[name].dtype)}"
                          for name in common if base[name].dtype != selftrained[name].dtype],
    }
    if problems := [f"{what}: {_first_few(items)}" for what, items in differences.items() if items]:
        raise MergeError(f"{base_name} and {selftrained_name} do not match: {'; '.join(problems)}")


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _first_few(items: list[str], few: int = 3) -> str:
    return ", ".join(items[:few]) + (f" and {len(items) - few} more" if len(items) > few else "")


def merge_state_dicts(base: Mapping[str, torch.Tensor], selftrained: Mapping[str, torch.Tensor], w: float,
                      keep_base: Callable[[str], bool] | None = None,
                      exclude: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """θ_r − w·(θ_s − θ_r) of two in-memory state dicts, by `merge_checkpoints`' rule; the tensors
    it does not merge are the base's own objects."""
    check_same_layout({k: TensorSpec.of(t) for k, t in base.items()},
                      {k: TensorSpec.of(t) for k, t in selftrained.items()})
    check_w(w)
    rule, merged = MergeRule(tuple(exclude), keep_base), {}
    for name, r in base.items():
        s = selftrained[name]
        merged[name] = merge_into(torch.empty_like(r), r, s, w, name) if rule.merges(name, r, s) else r
    return merged


def check_w(w: float) -> None:
    if not math.isfinite(w):
        raise MergeError(f"w must be a finite number, got {w}")
