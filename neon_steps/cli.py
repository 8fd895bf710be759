"""neon-merge: the one stand-alone command, Neon's merge of two checkpoints outside the workflow
(`neon-merge --help`). The inputs' sha256 starts on other threads before torch is imported (seconds
on a small machine, spent on one core), so that hashing costs the merge little or nothing."""
import argparse
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from neon_steps import filehash
from neon_steps.config import fmt
from neon_steps.errors import MergeError

if TYPE_CHECKING:
    from neon_steps.merge import MergeReport

DEFAULT_SHARD_SIZE = 5 * 10**9  # neon_steps.merge's, which imports torch

EPILOG = """\
sign convention: θ_neon = θ_r − w·(θ_s − θ_r), θ_r = BASE, θ_s = SELF_TRAINED.
  w > 0       extrapolates away from SELF_TRAINED (Neon)
  w = 0       writes BASE, bit for bit
  −1 < w < 0  interpolates toward SELF_TRAINED
  w = −1      writes SELF_TRAINED, bit for bit

Floating-point tensors are merged (fp16/bf16 computed in fp32); integer and bool tensors, tensors
holding inf or NaN, and --exclude'd names are copied from BASE.

examples:
  neon-merge base.safetensors selftrained.safetensors --w 1.5 --out neon.safetensors
  neon-merge base.pt selftrained.pt --key ema --w 0.5 1 2 --out neon_w{w}.safetensors
"""


def _size(text: str) -> int:
    """Bytes from `5GB`, `500MB`, `2GiB` or a plain number."""
    match = re.fullmatch(r"([0-9.e+]+)\s*(?:([kmgt])(i?)b?)?", text.strip().lower())
    try:
        number = float(match[1])
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 5GB, 500MB, 2GiB)") from None
    power = "kmgt".index(match[2]) + 1 if match[2] else 0
    return int(number * (1024 if match[3] else 1000) ** power)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neon-merge", usage="%(prog)s BASE SELF_TRAINED --w W [W ...] --out OUT [OUT ...] [options]",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Neon merge θ_r − w·(θ_s − θ_r) of two checkpoints, streamed tensor by tensor.")
    parser.add_argument("base", metavar="BASE",
                        help="θ_r: .safetensors, a safetensors index or folder, .pt/.pth/.bin/.ckpt, .pkl")
    parser.add_argument("selftrained", metavar="SELF_TRAINED", help="θ_s, the base fine-tuned on its own samples")
    parser.add_argument("--w", type=float, nargs="+", required=True, help="one or more merge weights")
    parser.add_argument("--out", nargs="+", required=True,
                        help="output .safetensors, one per w, or one with a {w} placeholder "
                             "(neon_w{w}.safetensors; w spelled 1, 0.5, -0.25)")
    parser.add_argument("--key", help="where the weights sit in a .pt/.pkl: ema, model.state_dict, ...")
    parser.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                        help="copy tensors whose names match from BASE (repeatable)")
    parser.add_argument("--shard-size", type=_size, default=DEFAULT_SHARD_SIZE, metavar="SIZE",
                        help="split outputs above this many bytes (default: 5GB)")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="load pickles that run code (.pkl, or .pt refused by weights_only): trusted files only")
    return parser


def _outputs_for(outs: list[str], ws: list[float]) -> list[str]:
    if len(outs) == 1 and len(ws) > 1:
        if "{w}" not in outs[0]:
            raise MergeError(f"{len(ws)} values of --w need one --out per w or a {{w}} placeholder in --out")
        outs = outs * len(ws)
    if len(outs) != len(ws):
        raise MergeError(f"{len(ws)} values of --w but {len(outs)} of --out")
    return [out.replace("{w}", fmt(w)) for out, w in zip(outs, ws)]


def _log(reports: "list[MergeReport]") -> None:
    for report in reports:
        print(f"merge: {report.summary()}", file=sys.stderr)


def _files_of(path: Path) -> list[Path] | None:
    """The files a checkpoint's hash covers, in its order, as neon_steps.checkpoints opens it; None
    where that takes more than a look (the merge then hashes them itself)."""
    if path.is_dir():
        for pattern in ("*.safetensors.index.json", "*.safetensors"):
            found = sorted(path.glob(pattern))
            if found:
                return _files_of(found[0]) if len(found) == 1 else None
        return None
    if path.name.endswith(".index.json"):
        weight_map = json.loads(path.read_text())["weight_map"]
        return [path, *sorted({path.parent / shard for shard in weight_map.values()})]
    return [path] if path.is_file() else None


def _files_to_hash(*inputs: str) -> list[list[Path]]:
    found = []
    for given in inputs:
        try:
            found.append(_files_of(Path(given)))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass  # the merge names what is wrong with the input
    return [files for files in found if files]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        outs = _outputs_for(args.out, args.w)
        with filehash.prefetched(_files_to_hash(args.base, args.selftrained)):  # while torch is imported
            from neon_steps.merge import merge_checkpoints

            _log(merge_checkpoints(args.base, args.selftrained, args.w, outs, key=args.key, exclude=args.exclude,
                                   allow_pickle=args.allow_pickle, shard_size=args.shard_size))
    except (MergeError, OSError) as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
