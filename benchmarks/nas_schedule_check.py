"""Does the NAS validation schedule train the teacher's architecture to its mIoU?

``segxai nas validate``/``study`` train every student with one identical schedule, which must be
long enough that the teacher's own architecture, trained from scratch with it, reaches
≥ 0.9 val mIoU. One initialisation (the study's reference row) cannot say whether a schedule is
reliably long enough, so this script trains the teacher's architecture from several
initialisations, exactly as the study's reference unit does (``build_candidate`` with
``derive_seed(seed, tag)``, the study's training and validation images and shuffling seed,
``train_model``), for one or more schedules, and prints the val mIoU and the per-class IoU of
every run (one JSON line each, also appended to ``--out``).

Usage::

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/nas_schedule_check.py \
        [--model builtin-quick] [--epochs 8,12] [--lr 5e-3] \
        [--inits teacher-arch,t1,t2,t3,t4] [--memory-format channels_last] [--out FILE.jsonl]

``--part I/N`` runs every N-th run starting at I (to spread the runs over processes).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="builtin-quick", help="the teacher (a segxai model spec "
                    "whose network has a UNetConfig; default %(default)s)")
    ap.add_argument("--epochs", type=_ints, default=[12], help="comma-separated epoch counts")
    ap.add_argument("--lr", type=_floats, default=[5e-3], help="comma-separated peak lrs")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--train-images", type=int, default=500)
    ap.add_argument("--val-images", type=int, default=100)
    ap.add_argument("--inits", default="teacher-arch,t1,t2,t3,t4",
                    help="initialisation tags (derive_seed(seed, tag); teacher-arch = the "
                         "study's reference row)")
    ap.add_argument("--memory-format", default="channels_last",
                    choices=("channels_last", "contiguous"))
    ap.add_argument("--seed", type=int, default=0, help="the study's --seed")
    ap.add_argument("--part", default="0/1", help="I/N: run every N-th run from I")
    ap.add_argument("--quick", action="store_true", help="2 initialisations, 1 epoch, 32 images")
    ap.add_argument("--out", type=Path, default=None, help="append JSON lines here")
    args = ap.parse_args(argv)
    if args.quick:
        args.epochs, args.inits, args.train_images, args.val_images = [1], "teacher-arch,t1", 32, 16
    first, every = (int(v) for v in args.part.split("/"))
    import torch

    from segxai.data import make_shapes
    from segxai.models import TrainConfig, train_model
    from segxai.models.metrics import evaluate_segmentation
    from segxai.models.zoo import load_model
    from segxai.nas.search import build_candidate
    from segxai.nas.space import build_unet
    from segxai.nas.state import derive_seed

    torch.set_num_threads(1)
    teacher = load_model(args.model, progress=False).model
    config = teacher.config.to_dict()
    train = make_shapes(args.train_images, size=64, seed=args.seed + 30_000)
    val = make_shapes(args.val_images, size=64, seed=args.seed + 40_000)
    runs = [(e, lr, tag) for e in args.epochs for lr in args.lr
            for tag in args.inits.split(",")]
    for i, (epochs, lr, tag) in enumerate(runs):
        if i % every != first:
            continue
        tc = TrainConfig(epochs=epochs, batch_size=args.batch_size, lr=lr, seed=args.seed,
                         restore_best=False, memory_format=args.memory_format)
        model = build_candidate(build_unet, config, derive_seed(args.seed, tag))
        t0 = time.process_time()
        train_model(model, train, None, tc, progress=False)
        ev = evaluate_segmentation(model, val)
        row = {"epochs": epochs, "steps": epochs * -(-args.train_images // args.batch_size),
               "lr": lr, "memory_format": args.memory_format, "init": tag,
               "miou": round(float(ev["miou"]), 4),
               "iou": [round(float(x), 3) for x in ev["iou"]],
               "cpu_s": round(time.process_time() - t0, 1)}
        print(json.dumps(row), flush=True)
        if args.out is not None:
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
