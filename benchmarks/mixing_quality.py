"""Superseded: the mixing benchmark is now the diagnostic suite in ``benchmarks/mixing``.

    python benchmarks/mixing_quality.py [diagnostic ...] [options]
    == python -m benchmarks.mixing run [diagnostic ...] [options]   (default: the real-text one)

The old single-seed table (one 170k-parameter GPT, no LR decay, validation rows reused as the
controllers' target) could not separate any method from uniform; see issue 15 and
``benchmarks/mixing/README.md``.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.mixing.__main__ import main  # noqa: E402

if __name__ == "__main__":
    args = sys.argv[1:]
    if not any(not a.startswith("-") for a in args) and "--all" not in args:
        args = ["text", *args]
    raise SystemExit(main(["run", *args]))
