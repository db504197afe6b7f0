"""Command line: ``python -m tqref COMMAND ...``  (``python -m tqref --help``).

Heavy imports (NumPy kernels, Numba) happen inside the commands, so that
``--help`` answers at once.
"""

import argparse
import sys


def _add_data_dir(parser):
    parser.add_argument("--data-dir", metavar="DIR", default=None,
                        help="folder that contains cifar-10-batches-py/ (default: $TQREF_DATA, then the cache)")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m tqref",
        description="tqref: ternarized-weight CNNs (He, Gong, Fan, WACV 2019) in readable NumPy + Numba.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    demo = sub.add_parser(
        "demo", help="a short training run on a CIFAR-10 subset that prints its loss falling",
        description="Train a small network (or a ResNet) on a subset of CIFAR-10 for a few epochs, "
                    "printing the training loss per epoch and the accuracy on held-out test images.")
    demo.add_argument("--model", default="small", help="small (default), resnet20, resnet32, resnet44, resnet56")
    demo.add_argument("--train-images", type=int, default=2048, metavar="N",
                      help="training images used (default 2048)")
    demo.add_argument("--test-images", type=int, default=1000, metavar="N",
                      help="test images evaluated (default 1000)")
    demo.add_argument("--epochs", type=int, default=8, help="passes over the subset (default 8)")
    demo.add_argument("--batch-size", type=int, default=64, help="mini-batch size (default 64)")
    demo.add_argument("--lr", type=float, default=0.05, help="learning rate, cosine-decayed (default 0.05)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    _add_data_dir(demo)
    demo.set_defaults(func=_cmd_demo)

    download = sub.add_parser(
        "download", help="download the official CIFAR-10 archive into the cache (MD5 checked)",
        description="Fetch cifar-10-python.tar.gz, check its MD5 and extract it into DIR "
                    "(default: the tqref cache directory).")
    download.add_argument("--root", metavar="DIR", default=None, help="where to put cifar-10-batches-py/")
    download.set_defaults(func=_cmd_download)
    return parser


def _cmd_demo(args):
    from tqref.demo import run_demo
    run_demo(model=args.model, train_images=args.train_images, test_images=args.test_images,
             epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
             data_dir=args.data_dir)
    return 0


def _cmd_download(args):
    from tqref.data import default_cache_dir, download_cifar10
    root = download_cifar10(args.root or default_cache_dir())
    print(f"CIFAR-10 ready in {root}")
    return 0


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, OSError) as err:
        # errors of input reach the user as one readable line, not a traceback
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
