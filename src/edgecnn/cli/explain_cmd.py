"""``edgecnn explain CKPT``: CAM / Grad-CAM overlays of a trained network on image files or test images.

The network, its classes and its input normalisation come from the
checkpoint alone. ``--image FILE ...`` explains those files (decoded with
Pillow, grey for one-channel networks); ``--data digits|PATH`` explains the
first ``--count`` test images of a data set. Writes one PNG per image
(image | map over it) and a ``results.json`` of kind ``explain`` that
``edgecnn report`` renders.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from rich.console import Console
from rich.table import Table

from edgecnn.checkpoint import load_model
from edgecnn.data import load_data
from edgecnn.explain.cam import METHODS
from edgecnn.explain.interp import CONVENTIONS, MODES
from edgecnn.explain.run import ExplainConfig, explain_images
from edgecnn.results import write_results


def _read_image(path: Path, in_chans: int) -> torch.Tensor:
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    try:
        with Image.open(path) as im:
            a = np.asarray(im.convert("L" if in_chans == 1 else "RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{path} is not an image Pillow can read ({exc})") from None
    return torch.from_numpy(a.reshape(*a.shape[:2], -1).transpose(2, 0, 1).copy())


def _images(args: argparse.Namespace, meta: dict, in_chans: int,
            size: int | None) -> tuple[torch.Tensor, torch.Tensor | None, list[str]]:  # fmt: skip
    """The uint8 images to explain, their labels (None for files) and names."""
    if args.image:
        side = size or None
        tensors = [_read_image(Path(p), in_chans) for p in args.image]
        if side is None and len({tuple(t.shape) for t in tensors}) > 1:
            raise ValueError("the images differ in size and the checkpoint names no input size; resize them first")
        side = side or int(tensors[0].shape[-1])
        same = [torch.nn.functional.interpolate(t[None].float(), size=(side, side), mode="bilinear",
                                                align_corners=False, antialias=True)[0].round().clamp(0, 255)
                .to(torch.uint8) if t.shape[-2:] != (side, side) else t for t in tensors]  # fmt: skip
        return torch.stack(same), None, [str(p) for p in args.image]
    data = load_data(args.data, image_size=size if args.data == "digits" else None, limit=args.count)
    if meta.get("classes") and list(data.classes) != list(meta["classes"]):
        raise ValueError(f"{args.data} has classes {list(data.classes)[:5]}..., the checkpoint "
                         f"{list(meta['classes'])[:5]}...; explain images of the classes it was trained on")
    test = data.test.subset(list(range(min(args.count, len(data.test)))))
    return test.images, test.labels, list(test.paths)


def cmd_explain(args: argparse.Namespace) -> int:
    if bool(args.image) == bool(args.data):
        raise ValueError("give either --image FILE [FILE ...] or --data digits|PATH")
    if args.count < 1:
        raise ValueError(f"--count must be at least 1, got {args.count}")
    model, ckpt = load_model(args.checkpoint)
    meta = dict(ckpt.data)
    if "mean" not in meta or "std" not in meta:
        raise ValueError(f"{args.checkpoint} does not record its input normalisation (mean/std); "
                         "use a checkpoint written by edgecnn train or edgecnn demo")  # fmt: skip
    size = int(meta.get("image_size") or 0) or None
    images, labels, names = _images(args, meta, ckpt.in_chans, size)
    out = Path(args.out) if args.out else Path("runs") / f"explain-{Path(args.checkpoint).stem}"
    cfg = ExplainConfig(method=args.method, interp=args.interp, convention=args.convention, layer=args.layer,
                        target=args.target)  # fmt: skip
    section = explain_images(model, images, mean=meta["mean"], std=meta["std"], out_dir=out, cfg=cfg, labels=labels,
                             classes=meta.get("classes") or (), image_size=size, names=names)  # fmt: skip
    write_results(out, "explain", {"checkpoint": str(args.checkpoint), "arch": ckpt.arch, "data": meta.get("name"),
                                   "cam": section})  # fmt: skip
    table = Table(title=f"{args.method} at {section['layer']} ({section['map_size'][0]}×{section['map_size'][1]} map, "
                        f"{args.interp}, {args.convention} convention)")  # fmt: skip
    for col in ("image", "label", "predicted", "p", "peak cell", "file"):
        table.add_column(col)
    for r in section["images"]:
        table.add_row(r["name"] or "", r["label"] or "", r["predicted"], f"{r['probability']:.2f}",
                      str(tuple(r["peak_cell"])), str(out / r["file"]))  # fmt: skip
    Console().print(table)
    print(f"results: {out / 'results.json'}  (edgecnn report {out})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    d = ExplainConfig()
    p = sub.add_parser("explain", help="CAM / Grad-CAM overlays of a trained network on images",
                       description="Class activation maps (CAM, Zhou et al. 2016; Grad-CAM, Selvaraju et al. 2017) "
                       "of a checkpoint on image files or on test images of a data set.")  # fmt: skip
    p.add_argument("checkpoint", metavar="CKPT", help="an edgecnn checkpoint (.pt)")
    p.add_argument("--image", nargs="+", metavar="FILE", help="image files to explain")
    p.add_argument("--data", metavar="PATH", help="'digits' or a CIFAR-10 / ImageFolder folder or archive")
    p.add_argument("--count", type=int, default=8, help="test images to explain with --data (default 8)")
    p.add_argument("--method", choices=METHODS, default=d.method, help="cam needs a GAP → linear head (default cam)")
    p.add_argument("--interp", choices=MODES, default=d.interp, help=f"upsampling of the map (default {d.interp})")
    p.add_argument("--convention", choices=CONVENTIONS, default=d.convention,
                   help="image ↔ map coordinates: half_pixel (align_corners=False) or corner (x/S)")  # fmt: skip
    p.add_argument("--layer", default=None, help="target module path (default: the last layer with spatial extent)")
    p.add_argument("--target", type=int, default=None, help="class index to explain (default: the predicted class)")
    p.add_argument("--out", default=None, help="output folder (default runs/explain-<checkpoint name>)")
    p.set_defaults(func=cmd_explain)
