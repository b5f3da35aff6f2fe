"""Exact placement-group bundles, strategies and actor options of a teacher replica (no Ray needed)."""

import pytest

from potstill.cluster.resources import engine_kwargs_for, replica_plan
from potstill.schemas.generation import ReplicasConfig, TeacherConfig

BASE = {"max_concurrency": 10_000, "max_restarts": 0}


def test_cpu_only_cluster_one_cpu_bundle_and_no_gpu():
    plan = replica_plan(TeacherConfig(), ReplicasConfig(cpus_per_replica=1), cluster_gpus=0)
    assert plan.bundles == [{"CPU": 1.0}] and plan.strategy == "STRICT_PACK"
    assert plan.actor_options == {**BASE, "num_cpus": 1, "num_gpus": 0.0}
    assert engine_kwargs_for(TeacherConfig(), plan) == {}
    assert plan.describe() == "1 bundle of {CPU: 1} packed on one node"


def test_a_replica_that_asks_for_nothing_needs_no_placement_group():
    plan = replica_plan(TeacherConfig(), ReplicasConfig(cpus_per_replica=0), cluster_gpus=0)
    assert not plan.uses_placement_group and plan.actor_options["num_cpus"] == 0


@pytest.mark.parametrize("tp, bundles, actor_gpus, kwargs", [
    (1, [{"CPU": 2.0, "GPU": 1.0, "accelerator_type:H100": 0.001}], 1.0, {}),
    (2, [{"GPU": 1.0, "CPU": 3.0, "accelerator_type:H100": 0.001}]
        + [{"GPU": 1.0, "CPU": 1.0, "accelerator_type:H100": 0.001}], 0, {"distributed_executor_backend": "ray"}),
    (4, [{"GPU": 1.0, "CPU": 3.0, "accelerator_type:H100": 0.001}]
        + [{"GPU": 1.0, "CPU": 1.0, "accelerator_type:H100": 0.001}] * 3, 0, {"distributed_executor_backend": "ray"}),
    (8, [{"GPU": 1.0, "CPU": 3.0, "accelerator_type:H100": 0.001}]
        + [{"GPU": 1.0, "CPU": 1.0, "accelerator_type:H100": 0.001}] * 7, 0, {"distributed_executor_backend": "ray"}),
])
def test_tensor_parallel_bundles_are_strict_packed_one_gpu_each(tp, bundles, actor_gpus, kwargs):
    teacher = TeacherConfig(tensor_parallel_size=tp)
    plan = replica_plan(teacher, ReplicasConfig(cpus_per_replica=2, accelerator_type="H100"), cluster_gpus=8)
    assert plan.bundles == bundles  # the actor's own CPUs ride in bundle 0, where the actor is placed
    assert plan.strategy == "STRICT_PACK"  # tensor-parallel workers talk over NVLink: one node
    assert plan.actor_options == {**BASE, "num_cpus": 2, "num_gpus": actor_gpus, "accelerator_type": "H100"}
    assert engine_kwargs_for(teacher, plan) == kwargs


def test_pipeline_parallel_bundles_may_span_nodes():
    teacher = TeacherConfig(tensor_parallel_size=4, pipeline_parallel_size=2)
    plan = replica_plan(teacher, ReplicasConfig(cpus_per_replica=1), cluster_gpus=16)
    assert plan.bundles == [{"GPU": 1.0, "CPU": 2.0}] + [{"GPU": 1.0, "CPU": 1.0}] * 7
    assert plan.strategy == "PACK"
    assert engine_kwargs_for(teacher, plan) == {"distributed_executor_backend": "ray", "pipeline_parallel_size": 2}
    assert plan.describe() == "1 bundle of {CPU: 2, GPU: 1} + 7 bundles of {CPU: 1, GPU: 1} packed where possible"


def test_replica_larger_than_cluster_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="tensor_parallel_size"):
        replica_plan(TeacherConfig(tensor_parallel_size=16), ReplicasConfig(), cluster_gpus=8)


def test_pipeline_parallel_size_is_not_part_of_the_run_fingerprint():
    from potstill.schemas import GenerationConfig

    base = {"prompts": {"arithmetic": {}}}
    pp = {**base, "teacher": {"pipeline_parallel_size": 2}}
    assert GenerationConfig.model_validate(base).fingerprint() == GenerationConfig.model_validate(pp).fingerprint()


def test_an_api_teachers_replica_takes_no_gpu_even_on_a_gpu_cluster():
    teacher = TeacherConfig.model_validate({"engine": "openai", "model": "m", "api": {"base_url": "http://h/v1"}})
    plan = replica_plan(teacher, ReplicasConfig(), cluster_gpus=8)
    assert plan.gpus == 0 and not any(b.get("GPU") for b in plan.bundles)


def test_a_replica_is_charged_for_every_gpu_and_cpu_it_reserves():
    plan = replica_plan(TeacherConfig(tensor_parallel_size=4), ReplicasConfig(cpus_per_replica=2), cluster_gpus=8)
    assert plan.gpus == 4 and plan.cpus == 4 + 2
    assert replica_plan(TeacherConfig(), ReplicasConfig(cpus_per_replica=3), cluster_gpus=0).cpus == 3
