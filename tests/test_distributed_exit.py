"""A two-process run ends: no rank may hang at exit.

DDP's reducer holds the process group. When the group is destroyed by the reducer's deallocation,
the GIL is held while gloo's worker threads are joined, and a worker that needs the GIL to drop a
finished all-gather's tensors waits for ever (pytorch/pytorch#56297): rank 1 hung after `completed`
in CI. train() frees the DDP wrapper before destroy_process_group; this test watches every
rank's destroy_process_group (through a sitecustomize on PYTHONPATH) and fails while a DDP
wrapper is still alive there.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, patience, write_config, write_corpus

pytestmark = pytest.mark.slow

WATCH = """
import gc, os, torch.distributed as dist

def watched(*args, _destroy=dist.destroy_process_group, **kwargs):
    from torch.nn.parallel import DistributedDataParallel
    alive = sum(isinstance(o, DistributedDataParallel) for o in gc.get_objects())
    with open(os.environ["DDP_AT_DESTROY"], "a") as f:
        f.write(f"{os.environ.get('RANK')} {alive}\\n")
    return _destroy(*args, **kwargs)

dist.destroy_process_group = watched
"""


def test_every_rank_frees_ddp_before_the_process_group_is_destroyed(tmp_path, no_dropout_bert):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(WATCH)
    data = write_corpus(tmp_path / "train.jsonl", n=48)
    config = write_config(
        tmp_path / "two.toml", no_dropout_bert, data, tmp_path / "two",
        train={"epochs": 1, "batch_size": 16, "save_every": 0},
    )  # fmt: skip
    record = tmp_path / "destroyed.txt"
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "DDP_AT_DESTROY": str(record)}
    proc = subprocess.run(
        [sys.executable, "-m", "trainer", str(config), "--nproc", "2"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=patience(300),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = sorted(record.read_text().splitlines())
    assert seen == ["0 0", "1 0"], seen  # each rank: no DDP wrapper alive at the destroy
