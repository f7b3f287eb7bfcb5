"""``segxai train``: train the built-in U-Net on a named dataset or a folder.

Writes ``OUT/model.safetensors``, ``OUT/config.json`` and ``OUT/metrics.json`` (validation
mIoU per epoch); an interrupted run in ``OUT`` resumes from its last completed epoch.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from segxai.cli.common import (
    QuickDefaults,
    Range,
    add_common,
    options_named,
    plain_text,
    write_json,
)

DEFAULT_OUT = "segxai-train"
QUICK = QuickDefaults(
    full={"epochs": 6, "batch_size": 8, "n_train": 1000, "n_val": 200, "base_width": 16},
    quick={"epochs": 3, "batch_size": 4, "n_train": 200, "n_val": 50, "base_width": 8})


def register(subparsers: argparse._SubParsersAction) -> None:
    from segxai.data.catalog import DATASETS
    from segxai.models.unet import BLOCKS

    p = subparsers.add_parser(
        "train", help="train the built-in U-Net (checkpoints, resume, val mIoU per epoch)",
        description=plain_text(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", nargs="?", default="shapes",
                   help=f"one of {', '.join(DATASETS)}, or a folder with images/ and masks/ "
                        "(default %(default)s)")
    add_common(p, out_default=DEFAULT_OUT)
    p.add_argument("--epochs", type=Range(int, 1), default=None, help=f"epochs ({QUICK.help('epochs')})")
    p.add_argument("--batch-size", type=Range(int, 1), default=None,
                   help=f"images per step ({QUICK.help('batch_size')})")
    p.add_argument("--lr", type=Range(float, 0, low_open=True), default=2e-3,
                   help="peak learning rate (default %(default)s)")
    p.add_argument("--patience", type=Range(int, 0), default=3,
                   help="early stop after this many epochs without improvement (0: never; "
                        "default %(default)s)")
    p.add_argument("--n-train", type=Range(int, 1), default=None,
                   help=f"synthetic training images ({QUICK.help('n_train')})")
    p.add_argument("--n-val", type=Range(int, 1), default=None,
                   help=f"synthetic validation images ({QUICK.help('n_val')})")
    p.add_argument("--size", type=Range(int, 16), default=64,
                   help="synthetic image size (default %(default)s)")
    p.add_argument("--depth", type=Range(int, 1), default=3, help="U-Net depth (default %(default)s)")
    p.add_argument("--base-width", type=Range(int, 1), default=None,
                   help=f"first-stage channels ({QUICK.help('base_width')})")
    p.add_argument("--kernel-size", type=Range(int, 1), default=3,
                   help="convolution kernel (default %(default)s)")
    p.add_argument("--block", choices=BLOCKS, default="plain",
                   help="block type (default %(default)s)")
    p.add_argument("--decoder-width", type=Range(int, 1), default=None,
                   help="channels of every decoder stage (default: mirror the encoder)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from segxai.data.catalog import load_dataset
    from segxai.models import TrainConfig, UNet, UNetConfig, count_parameters, train_model

    epochs, batch_size = QUICK.get(args, "epochs"), QUICK.get(args, "batch_size")
    n_train, n_val = QUICK.get(args, "n_train"), QUICK.get(args, "n_val")
    base_width = QUICK.get(args, "base_width")
    out = Path(args.out)
    with options_named("epochs", "batch_size", "lr", "patience", "n_train", "n_val", "size",
                       "depth", "base_width", "kernel_size", "decoder_width", root="dataset",
                       name="dataset"):
        train, val = load_dataset(args.dataset, n_train=n_train, n_val=n_val, size=args.size,
                                  seed=args.seed)
        channels = int(train.images.shape[1])
        model_cfg = UNetConfig(depth=args.depth, base_width=base_width,
                               kernel_size=args.kernel_size, block=args.block,
                               decoder_width=args.decoder_width, in_channels=channels,
                               num_classes=train.num_classes)
        train_cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=args.lr,
                                patience=args.patience if args.patience and args.patience > 0
                                else None, seed=args.seed)
    torch.manual_seed(args.seed)
    model = UNet(model_cfg)
    if not args.quiet:
        print(f"segxai train: {args.dataset} ({len(train)} train / {len(val)} val, "
              f"{train.image_size[0]}×{train.image_size[1]}, classes {train.class_names}); "
              f"U-Net {count_parameters(model) / 1e6:.3f} M parameters; out {out}")
    t0 = time.perf_counter()
    result = train_model(model, train, val, train_cfg, out_dir=out, device=args.device,
                         progress=not args.quiet)
    summary = {"dataset": str(args.dataset), "out": str(out),
               "parameters": count_parameters(model), "epochs_run": result.epochs_run,
               "resumed_from": result.resumed_from, "best_epoch": result.best_epoch,
               "best_val_miou": result.best_val_miou, "val_miou": result.val_mious,
               "stopped_early": result.stopped_early, "seconds": time.perf_counter() - t0}
    metrics_path = out / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    metrics.update({"dataset": summary["dataset"], "parameters": summary["parameters"],
                    "model_config": model_cfg.to_dict()})
    write_json(metrics_path, metrics)
    if not args.quiet:
        for h in result.history:
            val_txt = f"{h['val_miou']:.4f}" if h["val_miou"] is not None else "-"
            print(f"  epoch {h['epoch']:3d}  loss {h['loss']:.4f}  val mIoU {val_txt}  "
                  f"{h['seconds']:.1f} s")
        best = result.best_val_miou
        print(f"segxai train: best val mIoU {best:.4f} (epoch {result.best_epoch}); wrote "
              f"{out / 'model.safetensors'}, {out / 'config.json'}, {metrics_path}"
              if best is not None else f"segxai train: wrote {out}")
    return 0
