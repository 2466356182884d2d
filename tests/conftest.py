import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Two cores: keep intra-op threads of the test process from fighting its subprocesses.
torch.set_num_threads(1)
