"""Strategies and checkpoints: a checkpoint round-trips model, optimizer, scheduler and loop state; one DDP
and one FSDP step on 2 gloo processes equal the single-process step on the whole batch; the fault hook
fires once.

    .venv/bin/pytest tests/unit/test_distill_parallel.py -q
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from potstill.pipelines.distill.checkpointing import HF_SUBDIR, restore_checkpoint, save_checkpoint
from potstill.pipelines.distill.faults import FAULT_ENV, InjectedFault, fault_from_env, maybe_fail
from potstill.pipelines.distill.schedule import build_scheduler
from potstill.pipelines.distill.train_loop import LoopState
from potstill.schemas.training import OptimConfig


def _model(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=64, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=1, num_key_value_heads=1, head_dim=64,
                                        max_position_embeddings=32, tie_word_embeddings=True))


def _train_a_step(model) -> tuple:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = build_scheduler(opt, OptimConfig(warmup_steps=2), 10)
    ids = torch.randint(0, 32, (2, 16), generator=torch.Generator().manual_seed(1))
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    sched.step()
    opt.zero_grad()
    return opt, sched


def test_checkpoint_round_trips_everything_and_saves_a_loadable_hf_folder(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from potstill.pipelines.distill.student import load_tokenizer

    model = _model()
    opt, sched = _train_a_step(model)
    state = LoopState(step=7, epoch=1, micro_in_epoch=3, tokens=99, data={"done": ["a"], "done_micro": 2, "round": None})
    assert save_checkpoint(tmp_path, model, opt, sched, state, {"loss": 1.5}, tokenizer=load_tokenizer("potstill:arithmetic-teacher"))
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"loss": 1.5}

    fresh = _model(seed=5)
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=1e-2)
    fresh_sched = build_scheduler(fresh_opt, OptimConfig(warmup_steps=2), 10)
    restored = restore_checkpoint(tmp_path, fresh, fresh_opt, fresh_sched)
    assert restored == state
    for p, q in zip(model.parameters(), fresh.parameters()):
        torch.testing.assert_close(p, q)
    a, b = opt.state_dict(), fresh_opt.state_dict()
    for k in a["state"]:
        torch.testing.assert_close(a["state"][k]["exp_avg"], b["state"][k]["exp_avg"])
    assert fresh_sched.last_epoch == sched.last_epoch and fresh_opt.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / HF_SUBDIR, local_files_only=True)
    torch.testing.assert_close(hf.model.embed_tokens.weight, model.model.embed_tokens.weight)


SCRIPT = textwrap.dedent("""
    import json, os, sys
    import numpy as np, torch, torch.distributed as dist, torch.multiprocessing as mp

    def batch():
        rng = np.random.default_rng(0)
        labels = rng.integers(0, 32, (4, 16)).astype(np.int32)
        labels[:, :3] = -100
        return {"input_ids": rng.integers(0, 32, (4, 16)).astype(np.int32), "labels": labels,
                "position_ids": np.tile(np.arange(16, dtype=np.int32), (4, 1)),
                "topk_ids": np.where(labels[..., None] >= 0, rng.integers(0, 32, (4, 16, 2)), -1).astype(np.int32),
                "topk_logprobs": np.full((4, 16, 2), -0.7, np.float16), "num_tokens": np.full(4, 16, np.int32)}

    def run(rank, world, kind, port, out):
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        if world > 1:
            dist.init_process_group("gloo", rank=rank, world_size=world)
        torch.set_num_threads(1)
        from transformers import LlamaConfig, LlamaForCausalLM
        from potstill.pipelines.distill import parallel
        from potstill.pipelines.distill.schedule import build_scheduler
        from potstill.pipelines.distill.train_loop import to_device, train_step
        from potstill.schemas.training import LossConfig, OptimConfig
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=64, intermediate_size=64, num_hidden_layers=2,
                                             num_attention_heads=1, num_key_value_heads=1, head_dim=64,
                                             max_position_embeddings=32, tie_word_embeddings=True))
        model = parallel.wrap_model(model, kind, torch.device("cpu"))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        sched = build_scheduler(opt, OptimConfig(warmup_steps=0, schedule="constant"), 10)
        b = batch()
        mine = {k: v[rank::world] for k, v in b.items()}
        micro = [{k: v[:1] for k, v in mine.items()}, {k: v[1:] for k, v in mine.items()}]  # grad accumulation
        m = train_step(model, opt, sched, [to_device(x, torch.device("cpu")) for x in micro],
                       LossConfig(sft_weight=1.0, kd_weight=0.5), grad_clip=0.5)
        sd = parallel.full_model_state(model)
        if rank == 0:
            json.dump({"loss": m["loss"], "grad_norm": m["grad_norm"],
                       "params": {k: v.float().sum().item() for k, v in sd.items()}}, open(out, "w"))
        if world > 1:
            dist.barrier()  # no rank tears gloo down while the other still talks to it (std::terminate in teardown)
            dist.destroy_process_group()

    if __name__ == "__main__":
        kind, world, port, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
        mp.spawn(run, args=(world, kind, port, out), nprocs=world)
""")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def single_step(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The reference: the same step in this process on the whole batch (no torch.distributed)."""
    namespace: dict = {"__name__": "step"}
    exec(SCRIPT, namespace)
    out = tmp_path_factory.mktemp("single") / "single.json"
    threads = torch.get_num_threads()
    try:
        namespace["run"](0, 1, "ddp", 0, str(out))
    finally:
        torch.set_num_threads(threads)
    return json.loads(out.read_text())


@pytest.mark.slow  # two gloo processes per case (~15 s)
@pytest.mark.parametrize("kind", ["ddp", "fsdp"])
def test_two_worker_step_equals_the_single_process_step(tmp_path: Path, kind: str, single_step: dict) -> None:
    script = tmp_path / "step.py"
    script.write_text(SCRIPT)
    out = tmp_path / f"{kind}.json"
    proc = subprocess.run([sys.executable, str(script), kind, "2", str(_free_port()), str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single, double = single_step, json.loads(out.read_text())
    assert double["loss"] == pytest.approx(single["loss"], rel=1e-5)
    assert double["grad_norm"] == pytest.approx(single["grad_norm"], rel=1e-4)
    assert double["params"].keys() == single["params"].keys()
    for k, v in single["params"].items():
        assert double["params"][k] == pytest.approx(v, rel=1e-4, abs=1e-4), k


def test_fault_hook_parses_the_env_and_fires_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pyarrow.fs import LocalFileSystem

    monkeypatch.delenv(FAULT_ENV, raising=False)
    assert fault_from_env(str(tmp_path)) is None
    monkeypatch.setenv(FAULT_ENV, "3:1")
    plan = fault_from_env(str(tmp_path / "job"))
    assert plan == {"step": 3, "rank": 1, "marker": f"{tmp_path}/job/faults/step-3"}
    fs = LocalFileSystem()
    maybe_fail(plan, 3, 0, fs)  # another rank
    maybe_fail(plan, 2, 1, fs)  # another step
    with pytest.raises(InjectedFault, match="test hook"):
        maybe_fail(plan, 3, 1, fs)
    maybe_fail(plan, 3, 1, fs)  # the restarted worker group trains through
    monkeypatch.setenv(FAULT_ENV, "three")
    with pytest.raises(ValueError, match=f"{FAULT_ENV}='three' is not 'STEP' or 'STEP:RANK'"):
        fault_from_env(str(tmp_path))
