"""`python -m demo generate|train|export|evaluate|all`: build the demo detector.

generate  training set (build/demo/train.npz) and the held-out COCO set (build/demo/eval/)
train     train from scratch, checkpoint in build/demo/checkpoint/
export    write tf_server/models/{shapes,shapes_jpeg}/1, label maps, warmups, tf_server/models.config
evaluate  COCO box/mask AP of the exported models -> build/demo/evaluation.json
classifier  generate, train, export and evaluate the digit classifier (tf_server/models/digits)
            -> build/demo/classifier.json
all       the four detector steps, then the classifier
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WORK_DIR = REPO_ROOT / "build" / "demo"
DEFAULT_MODELS_DIR = REPO_ROOT / "tf_server" / "models"


def log(message: str) -> None:
    print(message, flush=True)


def _configure_tensorflow(threads: int) -> None:
    """Bound TensorFlow's thread pools (the build machine has 2 shared cores)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def cmd_generate(args: argparse.Namespace) -> None:
    from demo.dataset import build_training_set
    from demo.synthetic import write_coco_dataset

    start = time.monotonic()
    data = build_training_set(args.train_count, seed=args.seed, workers=args.threads, log=log)
    data.save(args.work_dir / "train.npz")
    log(f"generate: {args.work_dir / 'train.npz'} ({len(data)} pictures)")
    json_path = write_coco_dataset(args.work_dir / "eval", count=args.eval_count, seed=args.eval_seed)
    log(f"generate: held-out set {json_path} ({args.eval_count} pictures), {time.monotonic() - start:.0f}s")


def cmd_train(args: argparse.Namespace) -> None:
    from demo.dataset import TrainingSet
    from demo.train import TrainConfig, train

    data = TrainingSet.load(args.work_dir / "train.npz")
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
                         seed=args.seed)
    train(data, config, args.work_dir / "checkpoint", log=log)


def cmd_export(args: argparse.Namespace) -> None:
    from demo.export import export_models
    from demo.train import load_trained

    net = load_trained(args.work_dir / "checkpoint")
    export_models(net, args.models_dir, scratch_dir=args.work_dir, log=log)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from demo.evaluate import evaluate_models, save_report, size_check
    from demo.synthetic import write_coco_dataset

    annotations = args.work_dir / "eval" / "annotations.json"
    if not annotations.exists():
        write_coco_dataset(args.work_dir / "eval", count=args.eval_count, seed=args.eval_seed)
    report = evaluate_models(args.models_dir, annotations, log=log)
    report["size_checks"] = size_check(args.models_dir, log=log)
    report["command"] = "python -m demo " + shlex.join(sys.argv[1:])
    train_info = args.work_dir / "checkpoint" / "train_info.json"
    if train_info.exists():
        report["training"] = json.loads(train_info.read_text())
    save_report(report, args.work_dir / "evaluation.json")
    log(f"evaluate: wrote {args.work_dir / 'evaluation.json'}")
    for name, scores in report["models"].items():
        log(f"evaluate: {name}: box AP@0.5 = {scores['bbox']['AP50']:.3f} (AP {scores['bbox']['AP']:.3f}), "
            f"mask AP@0.5 = {scores['segm']['AP50']:.3f} (AP {scores['segm']['AP']:.3f})")


def cmd_classifier(args: argparse.Namespace) -> None:
    from demo.classifier import ClassifierConfig, run

    report = run(args.models_dir, args.work_dir, ClassifierConfig(), log=log)
    log(f"classifier: top-1 accuracy {report['top1_accuracy']:.4f} on {report['pictures']} held-out pictures")


def cmd_all(args: argparse.Namespace) -> None:
    start = time.monotonic()
    for step in (cmd_generate, cmd_train, cmd_export, cmd_evaluate, cmd_classifier):
        step(args)
    log(f"all: done in {time.monotonic() - start:.0f}s")


def build_parser() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR,
                        help="data sets, checkpoint and evaluation report (default: build/demo)")
    options.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR,
                        help="where the SavedModels go (default: tf_server/models)")
    options.add_argument("--threads", type=int, default=2, help="TensorFlow threads and generator processes")
    options.add_argument("--seed", type=int, default=1, help="training set and initialisation seed")
    options.add_argument("--train-count", type=int, default=6000, help="training pictures")
    options.add_argument("--eval-count", type=int, default=300, help="held-out pictures (>= 200)")
    options.add_argument("--eval-seed", type=int, default=424242, help="held-out set seed")
    options.add_argument("--steps", type=int, default=3000, help="training steps")
    options.add_argument("--batch-size", type=int, default=16)
    options.add_argument("--learning-rate", type=float, default=2e-3)
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, function, text in (
        ("generate", cmd_generate, "generate the training and held-out data sets"),
        ("train", cmd_train, "train the network"),
        ("export", cmd_export, "export both SavedModels, label maps, warmups and models.config"),
        ("evaluate", cmd_evaluate, "COCO mAP of the exported models"),
        ("classifier", cmd_classifier, "generate, train, export and evaluate the digit classifier"),
        ("all", cmd_all, "every step of the detector, then the classifier"),
    ):
        commands.add_parser(name, help=text, parents=[options]).set_defaults(function=function)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    _configure_tensorflow(args.threads)
    args.function(args)


if __name__ == "__main__":
    main()
