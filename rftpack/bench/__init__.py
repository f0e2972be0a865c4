"""``rftpack bench``: rftpack's profiles and peer codecs on a real model, in one run.

Peers (zstd, ZipNN, GGUF via gguf-py, NNCodec) are never dependencies of rftpack: they are
imported lazily in worker processes and skipped, with a reason, when not installed.

Example:
    >>> from rftpack.bench import BenchConfig, run_bench           # doctest: +SKIP
    >>> result = run_bench(BenchConfig(quick=True, codecs=("rftpack", "zstd")))  # doctest: +SKIP
    >>> print(text_table(result))                                  # doctest: +SKIP
"""

from rftpack.bench.report import markdown_table, plot, text_table
from rftpack.bench.runner import BenchConfig, BenchResult, Row, run_bench, single_thread

__all__ = ["BenchConfig", "BenchResult", "Row", "markdown_table", "plot", "run_bench",
           "single_thread", "text_table"]
