"""Strategies and checkpoints: a DCP checkpoint round-trips model, optimizer, scheduler and loop state; the HF export
loads in transformers; one DDP and one FSDP step on 2 gloo processes equal the single-process step on the whole
batch (FSDP also with CPU offload and activation checkpointing); a student built from a Hugging Face folder on the meta device (FSDP2, bf16, activation checkpointing) and
checkpointed by 2 workers resumes on 1 with the same next-step loss; the fault hook fires once.

    .venv/bin/pytest tests/unit/distill/test_parallel.py -q
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from potstill.pipelines.distill.checkpointing import Checkpointer, read_metrics
from potstill.pipelines.distill.faults import InjectedFault, StepFault, maybe_fail, step_fault
from potstill.pipelines.distill.schedule import build_scheduler
from potstill.pipelines.distill.train_loop import LoopState
from potstill.schemas.training import OptimConfig

REPO = Path(__file__).resolve().parents[3]


def _model(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    from potstill.pipelines.distill.loss_model import StudentWithLoss

    torch.manual_seed(seed)
    return StudentWithLoss(LlamaForCausalLM(LlamaConfig(
        vocab_size=128, hidden_size=64, intermediate_size=64, num_hidden_layers=2, num_attention_heads=1,
        num_key_value_heads=1, head_dim=64, max_position_embeddings=32, tie_word_embeddings=True)))


def _train_a_step(model) -> tuple:
    from potstill.pipelines.distill.chunked_loss import LossScales

    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = build_scheduler(opt, OptimConfig(warmup_steps=2), 10)
    ids = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(1))
    loss, _, _ = model(ids, torch.arange(16).repeat(2, 1), ids.roll(-1, 1), scales=LossScales(1 / 32, 0.0))
    loss.backward()
    opt.step()
    sched.step()
    opt.zero_grad()
    return opt, sched


def test_checkpoint_round_trips_everything_and_the_export_loads_in_transformers(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from potstill.pipelines.arithmetic import teacher_build
    from potstill.pipelines.distill.hf_export import export_hf
    from potstill.pipelines.distill.student import load_tokenizer

    model = _model()
    opt, sched = _train_a_step(model)
    state = LoopState(step=7, epoch=1, micro_in_epoch=3, rows_in_epoch=12, tokens=99,
                      data={"done": ["a"], "done_micro": 2, "round": None})
    ckpt = Checkpointer(async_save=True)  # outside torch.distributed the async writer runs in a thread as well
    pending = ckpt.save(str(tmp_path / "ckpt"), model, opt, sched, state, {"loss": 1.5})
    assert pending.wait() == str(tmp_path / "ckpt")
    assert read_metrics(str(tmp_path / "ckpt")) == {"loss": 1.5}
    assert {"train_state.json", "metrics.json", ".metadata"} <= {p.name for p in (tmp_path / "ckpt").iterdir()}
    assert [p.name for p in (tmp_path / "ckpt").glob("*.distcp")] == ["__0_0.distcp"]

    fresh = _model(seed=5)
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=1e-2)
    fresh_sched = build_scheduler(fresh_opt, OptimConfig(warmup_steps=2), 10)
    assert Checkpointer(async_save=False).load(str(tmp_path / "ckpt"), fresh, fresh_opt, fresh_sched) == state
    for p, q in zip(model.parameters(), fresh.parameters()):
        torch.testing.assert_close(p, q)
    a, b = opt.state_dict(), fresh_opt.state_dict()
    for k in a["state"]:
        torch.testing.assert_close(a["state"][k]["exp_avg"], b["state"][k]["exp_avg"])
    assert fresh_sched.last_epoch == sched.last_epoch and fresh_opt.param_groups[0]["lr"] == opt.param_groups[0]["lr"]

    from potstill.pipelines.distill.student_init import tied_aliases

    class Wrapped(torch.nn.Module):  # the parameter names DDP gives: "module." in front
        def __init__(self, module):
            super().__init__()
            self.module = module

    assert tied_aliases(model) == tied_aliases(Wrapped(model)) == {"lm.lm_head.weight"}
    tok = load_tokenizer("potstill:arithmetic-teacher")
    out = export_hf(model, tok, str(tmp_path / "student"), dtype=torch.float32, max_file_bytes=100_000)
    files = sorted(p.name for p in Path(out).iterdir())
    assert "model.safetensors.index.json" in files and "model-00003-of-00003.safetensors" in files  # sharded
    hf = AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    torch.testing.assert_close(hf.model.embed_tokens.weight, model.lm.model.embed_tokens.weight)
    assert hf.config.use_cache and hf.lm_head.weight is hf.model.embed_tokens.weight
    messages = [{"role": "user", "content": "What is 1 + 2?"}]
    assert AutoTokenizer.from_pretrained(out).apply_chat_template(messages, add_generation_prompt=True, tokenize=False) \
        == teacher_build.render_prompt("What is 1 + 2?")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "tests.unit.distill.dist_steps", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def single_step(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The reference: the same step in one process on the whole batch (no torch.distributed)."""
    out = tmp_path_factory.mktemp("single") / "single.json"
    _run("step", "ddp", "1", "0", str(out))
    return json.loads(out.read_text())


@pytest.mark.slow  # two gloo processes per case (~15 s)
@pytest.mark.parametrize("kind", ["ddp", "fsdp", "fsdp-offload-ac"])
def test_two_worker_step_equals_the_single_process_step(tmp_path: Path, kind: str, single_step: dict) -> None:
    out = tmp_path / f"{kind}.json"
    _run("step", kind, "2", str(_free_port()), str(out))
    single, double = single_step, json.loads(out.read_text())
    assert double["loss"] == pytest.approx(single["loss"], rel=1e-5)
    assert double["grad_norm"] == pytest.approx(single["grad_norm"], rel=1e-4)
    assert double["params"].keys() == single["params"].keys()
    for k, v in single["params"].items():
        assert double["params"][k] == pytest.approx(v, rel=1e-4, abs=1e-4), k


@pytest.fixture(scope="module")
def qwen2_folder(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small random Qwen2 student saved as a Hugging Face folder (bf16 safetensors, the arithmetic tokenizer)."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    from potstill.pipelines.distill.student import load_tokenizer

    out = tmp_path_factory.mktemp("qwen2")
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=64, max_position_embeddings=256,
                         tie_word_embeddings=False)
    AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).save_pretrained(out)
    load_tokenizer("potstill:arithmetic-teacher").save_pretrained(out)
    return str(out)


@pytest.mark.slow  # two gloo process groups (~60 s on 2 busy cores)
def test_fsdp_checkpoint_of_two_workers_resumes_on_one_with_the_same_next_step_loss(qwen2_folder: str, tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    two, one = tmp_path / "two.json", tmp_path / "one.json"
    _run("save", qwen2_folder, str(ckpt), "2", str(_free_port()), str(two))
    assert sorted(p.name for p in ckpt.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]  # one shard per rank
    _run("resume", qwen2_folder, str(ckpt), "1", str(_free_port()), str(one))
    uninterrupted, resumed = json.loads(two.read_text()), json.loads(one.read_text())
    # The restored state matters: the untrained weights score step 2's batch far off what the trained ones do ...
    assert abs(resumed["fresh2"] - uninterrupted["step2"]) > 100 * 1e-4 * uninterrupted["step2"]
    # ... and the checkpoint of 2 workers, resumed on 1, trains step 2 as the uninterrupted 2 workers did.
    assert resumed["step2"] == pytest.approx(uninterrupted["step2"], rel=1e-4)
    assert resumed["grad_norm2"] == pytest.approx(uninterrupted["grad_norm2"], rel=1e-3)
    assert resumed["lr"] == uninterrupted["lr"]


def test_the_configured_fault_fires_once_and_a_rank_outside_the_group_is_refused(tmp_path: Path) -> None:
    from pyarrow.fs import LocalFileSystem

    from potstill.schemas.training import TrainFaultConfig, TrainingConfig

    assert step_fault(None, str(tmp_path)) is None
    plan = step_fault(TrainFaultConfig(step=3, rank=1), str(tmp_path / "job"))
    assert plan == StepFault(step=3, rank=1, marker=f"{tmp_path}/job/faults/step-3", kill=False,
                             registry=f"{tmp_path}/job/checkpoint_manager_snapshot.json")
    fs = LocalFileSystem()
    maybe_fail(plan, 3, 0, fs)  # another rank
    maybe_fail(plan, 2, 1, fs)  # another step
    with pytest.raises(InjectedFault, match="test hook"):
        maybe_fail(plan, 3, 1, fs)
    maybe_fail(plan, 3, 1, fs)  # the restarted worker group trains through
    with pytest.raises(ValueError, match=r"faults.rank \(2\) is not a worker of scaling.num_workers \(2\)"):
        TrainingConfig.model_validate({"name": "j", "data": {"runs": ["r"]}, "faults": {"step": 3, "rank": 2}})


def test_the_fault_hook_fires_only_once_ray_train_has_registered_the_newest_checkpoint(
        tmp_path: Path) -> None:
    """Checkpoints register in the background: the hook waits for the registry to list step 2 before failing at
    step 3, so the restart resumes from step 2 however fast the steps ran."""
    import json
    import threading

    from pyarrow.fs import LocalFileSystem

    from potstill.schemas.training import TrainFaultConfig

    plan = step_fault(TrainFaultConfig(step=3), str(tmp_path / "job"))
    registry = Path(plan.registry)
    registry.parent.mkdir(parents=True)
    registry.write_text(json.dumps({"checkpoint_results": [{"metrics": {"step": 1}}]}))
    registered = threading.Event()

    def register_step_2() -> None:
        registered.wait()
        registry.write_text(json.dumps({"checkpoint_results": [{"metrics": {"step": 1}}, {"metrics": {"step": 2}}]}))

    writer = threading.Thread(target=register_step_2)
    writer.start()
    fired = threading.Event()

    def fail() -> None:
        with pytest.raises(InjectedFault):
            maybe_fail(plan, 3, 0, LocalFileSystem(), checkpointed_step=2)
        fired.set()

    worker = threading.Thread(target=fail)
    worker.start()
    assert not fired.wait(0.5), "the hook fired before step 2 was registered"
    registered.set()
    worker.join(30)
    writer.join()
    assert fired.is_set() and Path(plan.marker).exists()
