#!/usr/bin/env python3
"""rftpack's profiles against peer codecs on a real model: ``rftpack bench`` as a script.

    python tools/bench.py [--quick] [--model PATH] [--plot bench.png] [--json] ...

Same flags as ``rftpack bench --help``. Threads are pinned to one before numpy is imported.
"""

from __future__ import annotations

import os
import sys

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

if __name__ == "__main__":
    from rftpack.cli.main import main

    sys.exit(main(["bench", *sys.argv[1:]]))
