import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Two cores: keep intra-op threads of the test process from fighting its subprocesses.
torch.set_num_threads(1)

# Precision-sensitive tests: their results depend on which CPU kernels run (bf16 matrix
# units, oneDNN's bf16 LSTM). `make test` runs them a second time with oneDNN and ATen
# limited to AVX2, so a machine with AVX-512 also checks the AVX2-only path.
ISA_MODULES = {
    "test_precision",
    "test_gnmt_benchmark",
    "test_txl_benchmark",
    "test_bert_benchmark",
    "test_benchmark_report",
}
ISA_WORDS = ("bf16", "precision")


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1]
        named = any(word in item.originalname for word in ISA_WORDS)
        if module in ISA_MODULES or named or "cpu_kind" in item.fixturenames:
            item.add_marker("isa")
