"""Train a tiny hybrid (Mamba2 / Qwen3-Next style) language model twice from the same
seed and data: with gatednorm's ops and with the pure-PyTorch reference; print both loss
curves, their max relative difference against the stated tolerance, PASS/FAIL and the
speed of both. Exit status 0 on PASS.

    python examples/train_hybrid.py [--device cpu|cuda] [--steps N] [--every K] [--seed S]

The logic lives in torch_ops/training_example.py (importable: tests run a short version).
"""
import sys
from pathlib import Path

try:
    import torch_ops  # noqa: F401  (installed, e.g. `pip install -e .`)
except ImportError:  # not installed: the checkout this file is in (built in place)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torch_ops.training_example import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
