"""A resumed training job trains what it trained before: a changed config, worker count or data is refused.

    .venv/bin/pytest tests/unit/distill/test_job_record.py -q
"""

from __future__ import annotations

from pathlib import Path

import pytest

from potstill.pipelines.distill.job_record import JobConflictError, claim_job
from potstill.schemas.training import TrainingConfig


def _cfg(tmp_path: Path, **sections) -> TrainingConfig:
    return TrainingConfig.model_validate({"name": "job", "data": {"runs": [str(tmp_path / "r1")]},
                                          "checkpoint": {"storage_path": str(tmp_path / "ckpt")}, **sections})


def _checkpointed(tmp_path: Path) -> None:
    (tmp_path / "ckpt" / "job" / "checkpoint_2026-12-01_00-00-00.000000").mkdir(parents=True)


FILES = ["/runs/r1/data/000000-a/x.parquet", "/runs/r1/data/000001-b/y.parquet"]


def test_a_resume_with_the_same_job_or_harmless_changes_is_accepted(tmp_path):
    claim_job(_cfg(tmp_path), FILES, follow=False)
    _checkpointed(tmp_path)
    claim_job(_cfg(tmp_path), FILES, follow=False)
    claim_job(_cfg(tmp_path, checkpoint={"storage_path": str(tmp_path / "ckpt"), "every_steps": 7, "keep": 5},
                    scaling={"num_workers": 2, "cpus_per_worker": 2, "bind_cpu_cores": False}), FILES, follow=False)


@pytest.mark.parametrize(("change", "files", "named"), [
    ({"optim": {"lr": 1e-4}}, FILES, "optim.lr: 0.003 -> 0.0001"),
    ({"run": {"max_steps": 50}}, FILES, "run.max_steps: None -> 50"),
    ({"scaling": {"num_workers": 4}}, FILES, "scaling.num_workers: 2 -> 4"),
    ({}, FILES + ["/runs/r1/data/000002-c/z.parquet"], "data: 2 committed files"),
])
def test_a_resume_that_would_train_something_else_is_refused_naming_the_change(tmp_path, change, files, named):
    claim_job(_cfg(tmp_path), FILES, follow=False)
    _checkpointed(tmp_path)
    with pytest.raises(JobConflictError, match="has checkpoints of a different job") as info:
        claim_job(_cfg(tmp_path, **change), files, follow=False)
    assert named in str(info.value) and "train under a new --name" in str(info.value)


def test_a_job_that_never_checkpointed_starts_afresh_under_its_name(tmp_path):
    claim_job(_cfg(tmp_path), FILES, follow=False)
    claim_job(_cfg(tmp_path, optim={"lr": 1e-4}), FILES, follow=False)  # nothing to resume: the record is replaced
    _checkpointed(tmp_path)
    with pytest.raises(JobConflictError, match="optim.lr: 0.0001 -> 0.003"):
        claim_job(_cfg(tmp_path), FILES, follow=False)
