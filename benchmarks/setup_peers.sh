#!/usr/bin/env bash
# Install the peer loaders in their OWN virtual environments, outside the repository, so that
# their pins never touch the project venv:
#
#   $MIXSTREAM_BENCH_VENV        (default /work/venv-bench)        torch 2.13 CPU, torchdata,
#                                litdata, datasets, pyarrow, zstandard, matplotlib; mixstream
#                                itself is imported from the repo (PYTHONPATH), not installed
#   $MIXSTREAM_BENCH_VENV_MOSAIC (default /work/venv-bench-mosaic) mosaicml-streaming 0.13,
#                                which needs torchvision and so torch >= 2.14 (its CUDA build:
#                                several GB; the CPU wheel of 2.13 fails inside torchvision),
#                                numpy < 2.2, transformers < 5
#
# Idempotent: an environment whose marker file exists is left alone (delete the folder to redo).
# Set SKIP_MOSAIC=1 to skip the mosaic environment; bench.py then records mosaic as not installed.
set -euo pipefail
PY=${PYTHON:-python3}
VENV=${MIXSTREAM_BENCH_VENV:-/work/venv-bench}
VENV_MOSAIC=${MIXSTREAM_BENCH_VENV_MOSAIC:-/work/venv-bench-mosaic}
MOSAIC_TIMEOUT=${MOSAIC_TIMEOUT:-1200}
log() { printf '[setup_peers %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

if [ ! -f "$VENV/.mixstream-bench-ok" ]; then
  log "creating $VENV"
  "$PY" -m venv "$VENV"
  # torch==2.13.0 first and pinned: a bare 'torch' would pull the multi-GB CUDA build
  "$VENV/bin/pip" install -q "torch==2.13.0" 2>&1 | grep -v "is ignored" || true
  "$VENV/bin/pip" install -q "torch==2.13.0" "torchdata==0.11.0" "litdata==0.2.76" \
      "datasets>=3" "pyarrow>=14" "zstandard>=0.21" "fsspec>=2023.1" "tqdm" "matplotlib>=3.6" \
      "numpy>=1.24" 2>&1 | grep -v "is ignored" || true
  "$VENV/bin/python" -c "import torch, torchdata.nodes, litdata, datasets; print('bench venv: torch', torch.__version__)"
  touch "$VENV/.mixstream-bench-ok"
else
  log "$VENV is ready"
fi

if [ "${SKIP_MOSAIC:-0}" != 1 ] && [ ! -f "$VENV_MOSAIC/.mixstream-bench-ok" ]; then
  log "creating $VENV_MOSAIC (torch 2.14 + torchvision: large download where not cached)"
  "$PY" -m venv "$VENV_MOSAIC"
  if timeout "$MOSAIC_TIMEOUT" "$VENV_MOSAIC/bin/pip" install -q "mosaicml-streaming==0.13.0" \
        "torch==2.14.1" "torchvision==0.29.1" 2>&1 | grep -v "is ignored"; then :; fi
  if "$VENV_MOSAIC/bin/python" -c "import streaming; from streaming import StreamingDataset; print('mosaic venv: streaming', streaming.__version__)"; then
    touch "$VENV_MOSAIC/.mixstream-bench-ok"
  else
    log "mosaicml-streaming could not be installed or imported: its figures will be recorded as not measurable"
  fi
else
  log "$VENV_MOSAIC is ready (or skipped)"
fi
