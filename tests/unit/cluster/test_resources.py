import pytest

from potstill.cluster.resources import engine_kwargs_for, replica_plan
from potstill.schemas.generation import ReplicasConfig, TeacherConfig


def test_cpu_cluster_replica_takes_no_gpu():
    plan = replica_plan(TeacherConfig(), ReplicasConfig(cpus_per_replica=1), cluster_gpus=0)
    assert plan.actor_options["num_gpus"] == 0
    assert plan.actor_options["num_cpus"] == 1
    assert plan.actor_options["max_restarts"] == 0  # the controller replaces replicas itself
    assert not plan.uses_placement_group


def test_single_gpu_replica():
    plan = replica_plan(TeacherConfig(), ReplicasConfig(accelerator_type="H100"), cluster_gpus=8)
    assert plan.actor_options["num_gpus"] == 1.0
    assert plan.actor_options["accelerator_type"] == "H100"
    assert engine_kwargs_for(TeacherConfig(), plan) == {}


def test_tensor_parallel_replica_uses_a_strict_pack_placement_group():
    teacher = TeacherConfig(tensor_parallel_size=4)
    plan = replica_plan(teacher, ReplicasConfig(cpus_per_replica=2), cluster_gpus=8)
    assert plan.uses_placement_group and plan.strategy == "STRICT_PACK"
    assert [b["GPU"] for b in plan.bundles] == [1.0] * 4
    assert plan.bundles[0]["CPU"] == 3.0  # the actor's own CPUs ride in the first bundle
    assert plan.actor_options["num_gpus"] == 0
    assert engine_kwargs_for(teacher, plan) == {"distributed_executor_backend": "ray"}


def test_replica_larger_than_cluster_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="tensor_parallel_size"):
        replica_plan(TeacherConfig(tensor_parallel_size=16), ReplicasConfig(), cluster_gpus=8)


def test_an_api_teachers_replica_takes_no_gpu_even_on_a_gpu_cluster():
    teacher = TeacherConfig.model_validate({"engine": "openai", "model": "m", "api": {"base_url": "http://h/v1"}})
    plan = replica_plan(teacher, ReplicasConfig(), cluster_gpus=8)
    assert plan.actor_options["num_gpus"] == 0 and not plan.uses_placement_group


def test_a_replica_is_charged_for_every_gpu_and_cpu_it_reserves():
    plan = replica_plan(TeacherConfig(tensor_parallel_size=4), ReplicasConfig(cpus_per_replica=2), cluster_gpus=8)
    assert plan.gpus == 4 and plan.cpus == 4 + 2
    assert replica_plan(TeacherConfig(), ReplicasConfig(cpus_per_replica=3), cluster_gpus=0).cpus == 3
