from potstill.pipelines.generate.plan import iter_units, plan_run, shard_id_for
from potstill.schemas.prompt import Message, PromptRecord


def _prompts(n):
    return [PromptRecord.from_messages([Message(role="user", content=f"q{i}")], source_row=i) for i in range(n)]


def test_units_partition_in_order_and_are_deterministic():
    prompts = _prompts(7)
    units = list(iter_units(prompts, "r", 3))
    assert [len(u.prompts) for u in units] == [3, 3, 1]
    assert [p.prompt_id for u in units for p in u.prompts] == [p.prompt_id for p in prompts]
    again = list(iter_units(_prompts(7), "r", 3))
    assert [u.shard_id for u in units] == [u.shard_id for u in again]
    assert units[0].shard_id.startswith("000000-") and units[2].shard_id.startswith("000002-")


def test_plan_matches_units_and_shard_ids_depend_on_content():
    plan = plan_run(_prompts(7), "r", 3)
    assert plan.shard_ids == [u.shard_id for u in iter_units(_prompts(7), "r", 3)]
    assert plan.total_prompts == 7
    assert shard_id_for(0, ["a"]) != shard_id_for(0, ["b"])
