"""The config of a submitted job: which job it is, its run id, and the exact YAML the cluster runs.

    job = load_job_config("examples/arithmetic.yaml", out="s3://b/runs/{run_id}")
    job.kind, job.run_id, job.yaml()      # "generate", "run-3f2a...", the config with run_id pinned

`potstill submit` ships `job.yaml()` to the cluster (a ConfigMap for a
RayJob, the job's working_dir through the Jobs API). The run id is written
into it, so every attempt of the job, on any cluster and any potstill
version, resumes the same run (generation: `run_id`; training: `name`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from potstill.schemas import ConfigError, GenerationConfig, TrainingConfig, load_config

JobKind = Literal["generate", "train"]
CONFIG_FILE = {"generate": "generate.yaml", "train": "train.yaml"}


def submission_id(kind: str, run_id: str, attempt: int) -> str:
    """The Ray Jobs API submission id of one attempt of a run (`potstill submit`, and the RayJobs' spec.jobId)."""
    return f"potstill-{kind}-{run_id}-{attempt}"


def job_metadata(job: "JobConfig", attempt: int) -> dict[str, str]:
    """The Ray job metadata that marks a submission as attempt `attempt` of the job's run."""
    return {"potstill_run_id": job.run_id, "potstill_kind": job.kind, "potstill_attempt": str(attempt)}


def detect_kind(path: Path) -> JobKind:
    """`generate` for a generation config (it has `prompts`), `train` for a training config (`data` + `name`)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    except yaml.YAMLError:
        data = None  # load_config reports the syntax error with its line
    if isinstance(data, dict) and "prompts" in data:
        return "generate"
    if isinstance(data, dict) and "data" in data:
        return "train"
    raise ConfigError(str(path), ["<top level>: not a generation config (no `prompts`) nor a training config (no `data`); "
                                  "pass --kind generate|train or fix the file"])


@dataclass(frozen=True)
class JobConfig:
    """A validated generation or training config, ready to ship to a cluster."""

    kind: JobKind
    config: GenerationConfig | TrainingConfig
    source: str

    @property
    def run_id(self) -> str:
        """The id every attempt shares: generation `run_id` (derived from the config if unset), training `name`."""
        if isinstance(self.config, GenerationConfig):
            return self.config.resolved_run_id()
        return self.config.name

    @property
    def file_name(self) -> str:
        return CONFIG_FILE[self.kind]

    def data(self) -> dict[str, Any]:
        """The config as plain data: the keys the config file set (overrides applied), with the run id pinned."""
        data = self.config.model_dump(mode="json", exclude_unset=True)
        if self.kind == "generate":
            data = {"run_id": self.run_id, **{k: v for k, v in data.items() if k != "run_id"}}
        return data

    def yaml(self) -> str:
        """The config file the cluster runs (it validates back to the same config, run id included)."""
        head = f"# {self.kind} config rendered by `potstill submit` from {self.source}; run id {self.run_id}\n"
        return head + yaml.safe_dump(self.data(), sort_keys=False, allow_unicode=True)

    def storage_uris(self) -> dict[str, str]:
        """Config key -> URI of everything the job reads or writes by path (for the cluster checks)."""
        c = self.config
        if isinstance(c, GenerationConfig):
            uris = {"output.uri": c.output.uri}
            if c.prompts.path:
                uris["prompts.path"] = c.prompts.path
            return uris
        uris = {f"data.runs[{i}]": run for i, run in enumerate(c.data.runs)}
        uris["checkpoint.storage_path"] = c.checkpoint.storage_path
        if c.eval.prompts:
            uris["eval.prompts"] = c.eval.prompts
        return uris


def load_job_config(path: str | Path, *, kind: JobKind | None = None, out: str | None = None,
                    run_id: str | None = None) -> JobConfig:
    """Load and validate a config; `out` overrides output.uri (generation), `run_id` the run id / training name."""
    path = Path(path)
    kind = kind or detect_kind(path)
    if kind == "generate":
        cfg: GenerationConfig | TrainingConfig = load_config(path, GenerationConfig, {"output.uri": out, "run_id": run_id})
    else:
        if out is not None:
            raise ConfigError(str(path), ["--out: a training job writes to checkpoint.storage_path; set that in the config"])
        cfg = load_config(path, TrainingConfig, {"name": run_id})
    return JobConfig(kind, cfg, str(path))


def _is_remote(uri: str) -> bool:
    return "://" in uri


def with_absolute_paths(job: JobConfig, base: Path | None = None) -> JobConfig:
    """Local relative paths made absolute (against `base`, default the current folder).

    The job runs in a working folder of its own on the cluster, so `runs/x`
    would land there; an absolute path means the same folder wherever the
    cluster shares this machine's filesystem (a local `ray start`).
    """
    base = (base or Path.cwd()).resolve()

    def fix(p: str) -> str:
        return p if _is_remote(p) or Path(p).is_absolute() else str(base / p)

    def fix_model(p: str | None) -> str | None:
        return str(base / p) if p and not Path(p).is_absolute() and (base / p).exists() else p

    data = job.config.model_dump(mode="json")
    if job.kind == "generate":
        data["output"]["uri"] = fix(data["output"]["uri"])
        if data["prompts"].get("path"):
            data["prompts"]["path"] = fix(data["prompts"]["path"])
        for key in ("model", "tokenizer"):
            data["teacher"][key] = fix_model(data["teacher"][key])
        model: type[GenerationConfig] | type[TrainingConfig] = GenerationConfig
    else:
        data["data"]["runs"] = [fix(r) for r in data["data"]["runs"]]
        data["checkpoint"]["storage_path"] = fix(data["checkpoint"]["storage_path"])
        if data["eval"].get("prompts"):
            data["eval"]["prompts"] = fix(data["eval"]["prompts"])
        for key in ("model", "tokenizer"):
            data["student"][key] = fix_model(data["student"][key])
        model = TrainingConfig
    config = model.model_validate(data)
    if job.kind == "generate":
        config = config.model_copy(update={"run_id": job.run_id})  # paths are not in the fingerprint; pin it anyway
    return JobConfig(job.kind, config, job.source)


def kubernetes_problems(job: JobConfig) -> list[str]:
    """What stops a config from running as a RayJob: every path must be on S3 (pods share no disk)."""
    problems = []
    for key, uri in job.storage_uris().items():
        if not uri.startswith("s3://"):
            fix = "--out s3://BUCKET/prefix/{run_id} or " if key == "output.uri" else ""
            problems.append(f"{key}: {uri!r} is a local path, but a RayJob's driver and workers run in different pods "
                            f"with no shared disk; use {fix}an s3:// URI")
    return problems
