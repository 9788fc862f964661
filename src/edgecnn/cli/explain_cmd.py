"""``edgecnn explain CKPT``: CAM / Grad-CAM overlays of a trained network on image files or test images.

The network, its classes and its input normalisation come from the
checkpoint alone — for a network of your own code, from the constructor the
checkpoint records (or ``--model MODULE:FN[:key=value,...]``, which wins;
:func:`edgecnn.cli.user_model.load_any`). ``--image FILE ...`` explains those files (decoded with
Pillow, grey for one-channel networks); ``--data digits|PATH`` explains the
first ``--count`` test images of a data set. Writes one PNG per image
(image | map over it) and a ``results.json`` of kind ``explain`` that
``edgecnn report`` renders.

Hostile input is refused in one line (exit 2): a decompression bomb (an
image whose header claims more than 89,478,485 pixels is refused before it is
decoded), files that are not images or are truncated, one-pixel-wide images,
floating-point pixels; CMYK, palette, alpha, 1-bit and 16-bit images are
converted. The output folder follows the run-folder policy
(:func:`edgecnn.run_folder.claim_run_dir`): checked writable before any work, a
previous result refused unless ``--overwrite``; every file is written atomically.
"""

from __future__ import annotations

import argparse
import re
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.table import Table

from edgecnn.cli.user_model import add_model_option, load_any, notice
from edgecnn.data import load_data
from edgecnn.explain.cam import METHODS
from edgecnn.explain.interp import CONVENTIONS, MODES
from edgecnn.explain.run import ExplainConfig, explain_images
from edgecnn.run_folder import claim_run_dir
from edgecnn.report_schema import MAX_CAM_IMAGES
from edgecnn.run_document import write_results

MAX_IMAGES = MAX_CAM_IMAGES  # images one run explains: what the report's cam section holds
MAX_PIXELS = 89_478_485  # Pillow's decompression-bomb bound (Image.MAX_IMAGE_PIXELS by default): ~9459×9459
MIN_SIDE = 2  # a side of one pixel is constant along that axis: there is nothing to localise
_WIDE = ("I", "I;16", "I;16B", "I;16L", "I;16N")  # 16/32-bit integer grey levels, scaled to 8 bits when they fit


def _decoded(im: Image.Image, path: Path, in_chans: int) -> np.ndarray:
    """H×W (grey) or H×W×3 uint8 pixels of an open image: palette, alpha, CMYK, 1-bit and 16-bit converted."""
    target = "L" if in_chans == 1 else "RGB"
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")  # what Pillow asks for before dropping a palette's transparency
    if im.mode == "F":
        raise ValueError(f"image {path} has floating-point pixels (mode F) with no fixed grey range; "
                         "save it as an 8-bit image first")  # fmt: skip
    if im.mode in _WIDE:
        a = np.asarray(im, dtype=np.int64)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise ValueError(f"image {path} has 32-bit pixels outside 0..65535 (mode {im.mode}); "
                             "save it as an 8-bit image first")  # fmt: skip
        im = Image.fromarray(np.round(a / 257.0).astype(np.uint8), mode="L")  # 65535 -> 255
    try:
        return np.asarray(im.convert(target), dtype=np.uint8)
    except ValueError as exc:  # a mode Pillow cannot convert (LAB, HSV to RGB, ...)
        raise ValueError(f"image {path} has pixels of mode {im.mode}, which cannot be converted to {target} "
                         f"({exc}); save it as an RGB or grey image first") from None


def _read_image(path: Path, in_chans: int, side: int | None) -> torch.Tensor:
    """One image file as a uint8 C×H×W tensor, resized to ``side``×``side`` when given; one-line errors.

    Refused before decoding: more than :data:`MAX_PIXELS` pixels by the header
    (a decompression bomb: a 20000×20000 PNG of a few hundred bytes). Refused
    after: anything Pillow cannot decode (not an image, truncated, a bad
    checksum), a side under :data:`MIN_SIDE` pixels.
    """
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # above MAX_PIXELS: refuse, not warn
            with Image.open(path) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise Image.DecompressionBombError(f"Image size ({w * h} pixels)")
                if min(w, h) < MIN_SIDE:
                    raise ValueError(f"image {path} is {w}×{h} pixels: a side of one pixel has nothing to "
                                     f"localise; explain images of at least {MIN_SIDE}×{MIN_SIDE}")  # fmt: skip
                a = _decoded(im, path, in_chans)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        m = re.search(r"\((\d+) pixels\)", str(exc))
        got = f"{int(m[1]):,} pixels" if m else "more pixels"
        raise ValueError(f"refusing image {path}: its header says {got}, more than the {MAX_PIXELS:,} edgecnn "
                         "decodes (a decompression bomb, or a huge image); resize it first") from None
    except ValueError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow's decoders raise OSError, SyntaxError, EOFError, struct.error...
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise ValueError(f"{path} is not an image Pillow can read ({reason})") from None
    t = torch.from_numpy(a.reshape(*a.shape[:2], -1).transpose(2, 0, 1).copy())
    if side is not None and tuple(t.shape[-2:]) != (side, side):
        t = (torch.nn.functional.interpolate(t[None].float(), size=(side, side), mode="bilinear", align_corners=False,
                                             antialias=True)[0].round().clamp(0, 255).to(torch.uint8))  # fmt: skip
    return t


def _images(args: argparse.Namespace, meta: dict, in_chans: int,
            size: int | None) -> tuple[torch.Tensor, torch.Tensor | None, list[str]]:  # fmt: skip
    """The uint8 images to explain, their labels (None for files) and names.

    A checkpoint that records no input normalisation (``edgecnn compress --model``
    keeps none) is explained with ``--data``'s own mean/std — the normalisation
    edgecnn trains and fine-tunes with — written into ``meta``.
    """
    if args.image:
        if size is None:  # no input size recorded: the images must agree on one
            tensors = [_read_image(Path(p), in_chans, None) for p in args.image]
            if len({tuple(t.shape) for t in tensors}) > 1:
                raise ValueError("the images differ in size and the checkpoint names no input size; resize them first")
        else:  # each resized as it is read: never more than one full-size image in memory
            tensors = [_read_image(Path(p), in_chans, size) for p in args.image]
        return torch.stack(tensors), None, [str(p) for p in args.image]
    stats = "mean" in meta and "std" in meta  # else the whole training split's statistics are needed
    data = load_data(args.data, image_size=size if args.data == "digits" else None,
                     limit=args.count if stats else None)  # fmt: skip
    if not stats:
        notice(f"{args.checkpoint} records no input normalisation: using {data.name}'s own mean/std, as edgecnn "
               "trains with")  # fmt: skip
        meta.update(mean=list(data.mean), std=list(data.std))
    if meta.get("classes") and list(data.classes) != list(meta["classes"]):
        raise ValueError(f"{args.data} has classes {list(data.classes)[:5]}..., the checkpoint "
                         f"{list(meta['classes'])[:5]}...; explain images of the classes it was trained on")
    test = data.test.subset(list(range(min(args.count, len(data.test)))))
    return test.images, test.labels, list(test.paths)


def _claim(out: Path, overwrite: bool) -> Path:
    """The output folder, checked writable; a previous run in it is refused unless ``--overwrite``."""
    return claim_run_dir(out, overwrite=overwrite, resumable=False)


def _drop_stale_overlays(out: Path, kept: int) -> None:
    """Remove ``out/cam/<i>.png`` for ``i >= kept``: a previous, longer run's overlays no document names now."""
    folder = out / "cam"
    if not folder.is_dir():
        return
    for p in folder.glob("*.png"):
        if p.stem.isdigit() and int(p.stem) >= kept and p.is_file():
            p.unlink()


def cmd_explain(args: argparse.Namespace) -> int:
    """Check the options and the output folder, load the checkpoint, read the images, write overlays and results."""
    if bool(args.image) == bool(args.data):
        raise ValueError("give either --image FILE [FILE ...] or --data digits|PATH")
    if args.count < 1:
        raise ValueError(f"--count must be at least 1, got {args.count}")
    if args.count > MAX_IMAGES or len(args.image or ()) > MAX_IMAGES:
        raise ValueError(f"explain at most {MAX_IMAGES:,} images in one run (the report shows that many); "
                         "split them over several --out folders")  # fmt: skip
    out = Path(args.out) if args.out else Path("runs") / f"explain-{Path(args.checkpoint).stem}"
    out = _claim(out, args.overwrite)  # before any work: writable, and no previous result replaced unasked
    # every field checked, NaN/Inf weights refused (edgecnn.checkpoint); your code's network from its reference
    got = load_any(args.checkpoint, args.model, log=notice, command="explain")
    model, ckpt = got.model, got.checkpoint
    meta = dict(ckpt.data)
    if ("mean" not in meta or "std" not in meta) and not args.data:
        raise ValueError(f"{args.checkpoint} does not record its input normalisation (mean/std); explain with "
                         "--data (the data it was trained on: its mean/std are used), or use a checkpoint written "
                         "by edgecnn train or edgecnn demo")  # fmt: skip
    size = int(meta.get("image_size") or 0) or None
    images, labels, names = _images(args, meta, ckpt.in_chans, size)
    cfg = ExplainConfig(method=args.method, interp=args.interp, convention=args.convention, layer=args.layer,
                        target=args.target)  # fmt: skip
    try:
        section = explain_images(model, images, mean=meta["mean"], std=meta["std"], out_dir=out, cfg=cfg,
                                 labels=labels, classes=meta.get("classes") or (), image_size=size,
                                 names=names)  # fmt: skip
    except RuntimeError as exc:  # the network cannot take these images (too small for its strides, ...)
        first = (str(exc).strip().splitlines() or ["RuntimeError"])[0][:160]
        h, w = images.shape[-2:]
        raise ValueError(f"{args.checkpoint} cannot run on {h}×{w} images ({first}); pass images of the size it "
                         "was trained on") from exc  # fmt: skip
    doc = {"checkpoint": str(args.checkpoint), "arch": ckpt.arch, "data": meta.get("name"), "cam": section}
    if got.ref is not None:
        doc["model"] = got.ref.text
    write_results(out, "explain", doc)
    _drop_stale_overlays(out, len(section["images"]))
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
    p.add_argument("--out", default=None, help="output folder (default runs/explain-<checkpoint name>); a folder "
                   "holding a previous result is refused unless --overwrite")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace the previous result in --out")
    add_model_option(p, also="; default: the constructor CKPT records, if any (its weights load into the network)")
    p.set_defaults(func=cmd_explain)
