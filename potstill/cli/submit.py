"""`potstill submit CONFIG.yaml`: run a config on a Ray cluster, or print the KubeRay RayJob that runs it.

    potstill submit examples/arithmetic.yaml --address http://127.0.0.1:8265
    potstill submit examples/gsm8k.yaml --out s3://BUCKET/gsm8k/{run_id} --render-k8s --flavor gpu | kubectl apply -f -

With --address (the default) the config goes to the cluster's Jobs API as
attempt n of its run (`cluster/job_submission.py`): a run that is already
live or succeeded is reported, not started twice; a stopped or failed one is
submitted again and resumes. With --render-k8s nothing is contacted: the
RayJob and its ConfigMap (`cluster/kuberay_manifests.py`) go to stdout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from potstill.cli.cluster_options import AddressOption, TokenFileOption, connect
from potstill.cli.common import console, fail, print_json, reserve_stdout_for_json


def _outcome_lines(o: dict) -> list[str]:
    run, sid, address = o["run_id"], o["submission_id"], o["address"]
    where = f"job {sid} (attempt {o['attempt']}) on {address}"
    follow = f"logs: potstill logs {run} --follow --address {address}"
    if o["action"] == "running":
        return [f"run {run} is already {o['status'].lower()} as {where}; nothing new was submitted", follow,
                f"stop: potstill stop {run} --address {address}"]
    if o["action"] == "succeeded":
        return [f"run {run} already succeeded as {where}; nothing new was submitted",
                f"logs: potstill logs {run} --address {address}"]
    lines = [f"submitted run {run} as {where}"]
    if o["previous"]:
        p = o["previous"]
        lines.append(f"attempt {p['attempt']} ({p['submission_id']}) ended {p['status']}: this attempt resumes it "
                     "(committed shards / checkpoints are kept and skipped)")
    return lines + [follow, f"dashboard: {address.rstrip('/')}/#/jobs/{sid}"]


def submit(
    config: Path = typer.Argument(..., help="Generation or training config YAML."),
    kind: Optional[str] = typer.Option(None, "--kind", help="generate | train; default: from the config's keys."),
    out: Optional[str] = typer.Option(None, "--out", help="Generation output root (s3://... on Kubernetes); overrides output.uri."),
    run_id: Optional[str] = typer.Option(None, "--run-id", help="Run id (generation run_id, training name); re-using one resumes that run."),
    render_k8s: bool = typer.Option(False, "--render-k8s", help="Print the KubeRay RayJob and its ConfigMap instead of submitting."),
    flavor: str = typer.Option("gpu", "--flavor", help="With --render-k8s: the cluster it runs on, k8s/overlays/cpu or k8s/overlays/gpu."),
    image: Optional[str] = typer.Option(None, "--image", help="With --render-k8s: the potstill image (default: the overlay's)."),
    namespace: Optional[str] = typer.Option(None, "--namespace", help="With --render-k8s: namespace (default: the overlay's, potstill)."),
    address: Optional[str] = AddressOption,
    token_file: Optional[str] = TokenFileOption,
    json_out: bool = typer.Option(False, "--json", help="Print the outcome as one JSON object."),
) -> None:
    """Run a config on a Ray cluster (once per run), or print the RayJob that runs it on KubeRay."""
    if json_out:
        reserve_stdout_for_json()
    from potstill.cluster.job_config import load_job_config, with_absolute_paths
    from potstill.schemas import ConfigError

    if kind not in (None, "generate", "train"):
        fail(f"--kind: {kind!r} is not a job kind; use generate or train")
    if render_k8s and (address or token_file):
        fail("--render-k8s prints manifests and contacts no cluster; drop --address / --token-file")
    try:
        job = load_job_config(config, kind=kind, out=out, run_id=run_id)  # type: ignore[arg-type]
        if render_k8s:
            _render(job, flavor, image, namespace, json_out)
            return
        job = with_absolute_paths(job)
    except ConfigError as exc:
        fail(str(exc))
    from potstill.cluster.job_submission import ClusterError

    jobs = connect(address, token_file)
    _warn_local_paths(job, jobs.address)
    try:
        outcome = jobs.submit(job).to_dict()
    except ClusterError as exc:
        fail(str(exc))
    if json_out:
        print_json(outcome)
        return
    for line in _outcome_lines(outcome):
        console.print(line, highlight=False, soft_wrap=True)


def _warn_local_paths(job, address: str) -> None:
    """A local path means this machine's folder only when the cluster runs here; say so for a remote one."""
    from urllib.parse import urlparse

    if urlparse(address).hostname in ("127.0.0.1", "localhost", "::1"):
        return
    for key, uri in job.storage_uris().items():
        if "://" not in uri:
            console.print(f"note: {key} is the local path {uri}: the job reads and writes it on the cluster's nodes, "
                          "not on this machine; use an s3:// URI unless every node shares that folder",
                          highlight=False, soft_wrap=True)


def _render(job, flavor: str, image: Optional[str], namespace: Optional[str], json_out: bool) -> None:
    import sys

    from potstill.cluster.kuberay_manifests import FLAVORS, render_job, to_yaml

    if flavor not in FLAVORS:
        fail(f"--flavor: {flavor!r} is not a flavour; use {' or '.join(FLAVORS)} (k8s/overlays/<flavor>)")
    docs = render_job(job, flavor, image=image, namespace=namespace)  # type: ignore[arg-type]
    if json_out:
        print_json({"kind": job.kind, "run_id": job.run_id, "flavor": flavor, "manifests": docs})
        return
    sys.stdout.write(to_yaml(docs))
    sys.stdout.flush()
    rayjob = docs[-1]["metadata"]
    ns = rayjob.get("namespace", "default")
    console.print(f"RayJob {rayjob['name']} (namespace {ns}) runs {job.kind} run {job.run_id} on the {flavor} overlay's "
                  f"cluster; apply with `| kubectl apply -f -`, watch with `kubectl -n {ns} get rayjob {rayjob['name']} -w`",
                  highlight=False, soft_wrap=True)
