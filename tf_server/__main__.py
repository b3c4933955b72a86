"""``python -m tf_server``: the local TensorFlow-Serving-compatible model server.

Flags are parsed before TensorFlow is imported, so ``--help`` and flag mistakes answer at once.
TensorFlow runs Eigen's kernels, as TF Serving's own build does, unless ``TF_ENABLE_ONEDNN_OPTS``
is set: TensorFlow's pip wheel would pick oneDNN's on CPUs with AVX-512, whose kernels answer some
requests otherwise (an empty batch, a picture too small to pool) and, unchecked, abort the process
on ranks they do not expect (see ``tf_server/input_checks.py``).
"""

from __future__ import annotations

import os
import sys

from tf_server.flags import USAGE_EXIT_CODE, FlagError, parse_flags, usage, validate


def main(argv: list[str] | None = None) -> int:
    try:
        options = parse_flags(sys.argv[1:] if argv is None else argv)
        if options.help:
            sys.stdout.write(usage())
            return 0
        if not options.version:
            validate(options)
    except FlagError as error:
        sys.stderr.write(f"{error}\nRun `python -m tf_server --help` to list the flags.\n")
        return USAGE_EXIT_CODE

    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # read once, when TensorFlow loads
    from tf_server import server  # TensorFlow loads here

    if options.version:
        sys.stdout.write(server.version_text())
        return 0
    return server.serve(options)


if __name__ == "__main__":
    sys.exit(main())
