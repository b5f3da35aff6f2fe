"""Distillation benchmarks: Ray Train against plain torch.distributed, packing, loader headroom, SFT vs KD.
Prints one JSON object of same-run measurements.

    .venv/bin/python benchmarks/training_speed.py [--run runs/arithmetic-demo] [--epochs 2] [--quick]

- `ray_train_vs_plain_torch`: median optimizer-step time of the distillation loop (`run_loop`/`train_step`)
  under a TorchTrainer with 2 gloo workers, divided by the median of the very same loop under
  torch.distributed with 2 gloo processes and no Ray (same model, data, batch, step count; setup
  excluded: only the step is timed; each worker bound to a core of its own on both sides, as
  `scaling.bind_cpu_cores` does), over `--rounds` alternating runs of each. The Ray side runs
  `potstill train`'s default path: `--epochs` epochs over the packed dataset, materialized before the
  workers start (with `run.max_steps` set, Ray Data would pack while the workers train, competing
  with them for this machine's 2 cores). Goal <= 1.05. `step_ms_plain_torch_without_ray_running` is one more
  plain round after Ray has shut down: the plain rounds run beside the idle Ray cluster, as the Ray rounds do.
- `packing_efficiency`: document tokens / all positions of the packed training rows. Goal >= 0.95.
- `loader_headroom`: positions/s one core of loader delivers (read Parquet -> filter -> tokenize -> pack ->
  micro-batches: the function both the Ray Data pipeline and the follow-mode reader run; warm), divided by
  positions/s one training worker's steps consume. Goal >= 10. The Ray Data pipeline's own rate (start-up
  included) and its time to the first batch are reported next to it.
- `chunked_vs_full_logits_step`: median step time of the demo student (one worker, one thread) with the
  chunked loss training runs, over the same step computing full logits and the reference losses, on the same
  micro-batches, alternating 5 rounds. Goal <= 1.0 (the chunked loss must not slow small students down).
- `student_acc_sft`, `student_acc_kd`, `teacher_acc`: the demo student trained with SFT only and with
  KD only (top-4 teacher logprobs) at the same step budget, and the teacher, scored in vLLM on the same
  fresh held-out problems. The student accuracies are means over `--seeds` seeds (listed per seed next
  to them): a single seed of a small student says more about that seed than about the loss. Goal: KD at
  least as good as SFT, within 2 points.

Without `--run`, the traces come from a fresh generation run of the demo (the shipped teacher, 2000
problems). `--quick` skips the two accuracy trainings.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WORKERS = 2


def training_config(run: str, storage: str, name: str, **overrides):
    from potstill.schemas import load_config
    from potstill.schemas.training import TrainingConfig

    base = {"data.runs": [run], "checkpoint.storage_path": storage, "name": name}
    return load_config(REPO / "examples" / "distill_arithmetic.yaml", TrainingConfig, base | overrides)


def generate_traces(out: Path) -> str:
    from potstill.pipelines.jobs.run_generation import run_generation
    from potstill.schemas import GenerationConfig, load_config

    cfg = load_config(REPO / "examples" / "arithmetic.yaml", GenerationConfig,
                      {"output.uri": str(out), "prompts.arithmetic.count": 2000, "sampling.n": 1})
    run_generation(cfg)
    return str(out)


# ---- the same loop without Ray -------------------------------------------------------------------

def _plain_worker(rank: int, port: int, cfg_json: str, spec_json: str, files: list[str], steps: int, out: str) -> None:
    import torch
    import torch.distributed as dist

    from potstill.pipelines.distill.cpu_binding import bind_worker
    from potstill.pipelines.distill.follow import equalized
    from potstill.pipelines.distill.local_reader import LocalReader, PackSpec
    from potstill.pipelines.distill.parallel import resolve_precision
    from potstill.pipelines.distill.schedule import build_scheduler
    from potstill.pipelines.distill.student import load_tokenizer
    from potstill.pipelines.distill.student_init import build_trainable
    from potstill.pipelines.distill.train_loop import LoopPlan, LoopState, per_worker_skip, run_loop
    from potstill.pipelines.jobs.train_worker import SHUFFLE_BUFFER_ROWS
    from potstill.schemas.training import TrainingConfig

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)  # what Ray gives a 1-CPU worker (OMP_NUM_THREADS=1)
    dist.init_process_group("gloo", rank=rank, world_size=WORKERS)
    cfg = TrainingConfig.model_validate_json(cfg_json)
    if cfg.scaling.bind_cpu_cores:  # what worker.py does on CPU, after the process group exists
        bind_worker(rank, WORKERS, cfg.scaling.cpus_per_worker)
    spec = PackSpec(**json.loads(spec_json))
    device = torch.device("cpu")
    torch.manual_seed(cfg.run.seed)
    model = build_trainable(cfg, load_tokenizer(spec.tokenizer_path), device, resolve_precision(cfg.strategy.precision, device))
    o = cfg.optim
    optimizer = torch.optim.AdamW(model.parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
    scheduler = build_scheduler(optimizer, o, steps)
    reader = LocalReader(spec, cfg.run.micro_batch_size, SHUFFLE_BUFFER_ROWS, rank)
    mine = files[rank::WORKERS]

    epoch_batches = per_worker_skip(lambda epoch: equalized(reader.batches(mine, epoch), spec, cfg.run.micro_batch_size, device))

    medians: list[float] = []

    def report(state, metrics, final):
        if metrics:
            medians.append(metrics["step_s_median"])

    run_loop(model, optimizer, scheduler, epoch_batches, LoopPlan(1000, steps, cfg.run.grad_accum_steps, steps + 1),
             LoopState(), cfg.loss, o.grad_clip, device, report)
    if rank == 0:
        Path(out).write_text(json.dumps({"step_s_median": medians[-1]}))
    dist.destroy_process_group()


def plain_torch_step_s(cfg, spec, files: list[str], steps: int) -> float:
    """Median step time of `run_loop` on 2 gloo processes, no Ray."""
    import dataclasses

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as d:
        out = str(Path(d) / "plain.json")
        mp.spawn(_plain_worker, args=(port, cfg.model_dump_json(), json.dumps(dataclasses.asdict(spec)), files, steps, out),
                 nprocs=WORKERS)
        return json.loads(Path(out).read_text())["step_s_median"]


# ---- measurements --------------------------------------------------------------------------------

def chunked_vs_full_logits_step(cfg, spec, files: list[str], rounds: int = 5, steps: int = 20) -> dict[str, float]:
    """Median step time (forward + backward + AdamW, one worker, one thread) of the demo student with the chunked
    loss (`StudentWithLoss`, what training runs) over the same step with full logits and the reference losses
    (what training ran before), on the same micro-batches, alternating `rounds` times."""
    import torch

    from potstill.pipelines.distill import losses
    from potstill.pipelines.distill.chunked_loss import LossScales
    from potstill.pipelines.distill.local_reader import LocalReader
    from potstill.pipelines.distill.loss_model import StudentWithLoss
    from potstill.pipelines.distill.student import load_student, load_tokenizer
    from potstill.pipelines.distill.train_loop import to_device

    torch.set_num_threads(1)
    batches = [to_device(b, torch.device("cpu")) for _, b in zip(range(steps), LocalReader(spec, cfg.run.micro_batch_size).batches(files))]
    model = StudentWithLoss(load_student(cfg.student, load_tokenizer(spec.tokenizer_path), cfg.packing.max_tokens, 0))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def chunked(b):
        n = float((b["labels"] != -100).sum())
        loss, _, _ = model(b["input_ids"], b["position_ids"], b["labels"], b.get("topk_ids"), b.get("topk_logprobs"),
                           scales=LossScales(cfg.loss.sft_weight / n, cfg.loss.kd_weight / n))
        return loss

    def full(b):
        logits = model.lm(input_ids=b["input_ids"], position_ids=b["position_ids"], use_cache=False).logits
        sft, kd = losses.loss_sums(logits, b, cfg.loss)
        n = (b["labels"] != -100).sum()
        return losses.mix(sft, kd, n, n, cfg.loss)

    def median_step(fn) -> float:
        times = []
        for b in batches:
            t0 = time.perf_counter()
            fn(b).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    a, b = [], []
    for _ in range(rounds):
        a.append(median_step(chunked))
        b.append(median_step(full))
    return {"chunked_vs_full_logits_step": round(statistics.median(a) / statistics.median(b), 3),
            "step_ms_chunked_loss": round(statistics.median(a) * 1e3, 1), "step_ms_full_logits": round(statistics.median(b) * 1e3, 1)}


def pack_spec(cfg, files: list[str]):
    from potstill.pipelines.distill.dataset import trace_sources
    from potstill.pipelines.distill.local_reader import PackSpec
    from potstill.pipelines.distill.student import load_tokenizer
    from potstill.pipelines.jobs.run_training import plan_tokenization

    path, use_ids, width = plan_tokenization(cfg, trace_sources(files, cfg.data.storage))
    tok = load_tokenizer(path)
    return PackSpec(cfg.data.model_dump(mode="json"), path, use_ids, width, cfg.packing.max_tokens, cfg.packing.enabled,
                    tok.pad_token_id or 0)


def loader_rates(cfg, spec, files: list[str]) -> dict[str, float]:
    """What the loaders deliver, warm: one worker's `LocalReader` on one core (Parquet -> filter -> tokenize ->
    pack -> micro-batches, the function every loader runs), and a full pass of the Ray Data pipeline over 8
    copies of the files (start-up included, and its time to the first batch). Also the rows' packing efficiency."""
    from potstill.pipelines.jobs.train_dataset import build_dataset
    from potstill.pipelines.distill.local_reader import LocalReader

    def drain(batches) -> dict[str, float]:
        started, first, positions, docs = time.perf_counter(), None, 0, 0
        for batch in batches:
            first = first if first is not None else time.perf_counter() - started
            positions += batch["input_ids"].size
            docs += int(batch["num_tokens"].sum())
        return {"per_s": positions / (time.perf_counter() - started), "first_s": first or 0.0, "efficiency": docs / positions}

    reader = LocalReader(spec, cfg.run.micro_batch_size)
    drain(reader.batches(files[:1]))  # warm-up: tokenizer
    local = drain(reader.batches(files))

    def ray_pass() -> dict[str, float]:
        ds = build_dataset([files * 8], cfg, spec.tokenizer_path, spec.use_teacher_ids, spec.topk_width)
        return drain(ds.iter_batches(batch_size=cfg.run.micro_batch_size, batch_format="numpy"))

    ray_pass()  # warm-up: task worker processes
    ray_data = ray_pass()
    return {"local_reader": local["per_s"], "ray_data": ray_data["per_s"], "ray_data_first_batch_s": ray_data["first_s"],
            "packing_efficiency": local["efficiency"]}


def accuracy_pair(run: str, storage: str, files: list[str], problems, seeds: int) -> dict:
    """SFT-only and KD-only students at the demo's step budget, `seeds` of each (run.seed 0..seeds-1)."""
    from potstill.pipelines.jobs.run_training import run_training
    from potstill.pipelines.jobs.evaluate import evaluate

    out: dict = {"sft": {"accuracy": []}, "kd": {"accuracy": []}}
    for seed in range(seeds):
        for key, loss in (("sft", {"sft_weight": 1.0, "kd_weight": 0.0}), ("kd", {"sft_weight": 0.0, "kd_weight": 1.0})):
            cfg = training_config(run, storage, f"bench-{key}-{seed}")
            cfg = cfg.model_copy(update={"loss": cfg.loss.model_copy(update=loss),
                                         "run": cfg.run.model_copy(update={"seed": seed})})
            summary = run_training(cfg)
            out[key]["steps"] = summary["steps"]
            out[key]["accuracy"].append(evaluate(summary["student"], problems)["accuracy"])
            print(f"[bench] {key} seed {seed}: {out[key]['accuracy'][-1]} after {summary['steps']} steps",
                  file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="Finished generation run to train on (default: generate the demo's traces).")
    parser.add_argument("--epochs", type=int, default=2, help="Timed epochs per framework and round.")
    parser.add_argument("--rounds", type=int, default=3, help="Alternating plain/Ray timing rounds.")
    parser.add_argument("--quick", action="store_true", help="Skip the SFT/KD accuracy trainings.")
    parser.add_argument("--seeds", type=int, default=3, help="Seeds per SFT/KD student (accuracies are their mean).")
    args = parser.parse_args(argv)

    from potstill.pipelines.output.commit import committed_data_files
    from potstill.cluster.connect import ensure_ray
    from potstill.pipelines.jobs.run_training import local_cpus, quiet_ray_data, run_training
    from potstill.pipelines.jobs.evaluate import evaluate, load_eval_prompts, trained_questions

    work = Path(tempfile.mkdtemp(prefix="potstill-bench-"))
    ensure_ray(None, local_cpus(WORKERS, 1), dashboard=True)
    quiet_ray_data()
    run = args.run or generate_traces(work / "traces")
    files = committed_data_files(run)
    cfg = training_config(run, str(work / "ckpt"), "bench-timing")
    spec = pack_spec(cfg, files)

    loss_step = chunked_vs_full_logits_step(cfg, spec, files)
    print(f"[bench] loss step {loss_step}", file=sys.stderr, flush=True)
    loader = loader_rates(cfg, spec, files)
    print(f"[bench] loader {loader}", file=sys.stderr, flush=True)
    timing = cfg.model_copy(update={"run": cfg.run.model_copy(update={"epochs": args.epochs, "max_steps": None}),
                                    "checkpoint": cfg.checkpoint.model_copy(update={"every_steps": 10**9})})
    plain, ray = [], []
    for i in range(args.rounds):  # alternate, so load from other processes on a shared machine hits both alike
        metrics = run_training(timing.model_copy(update={"name": f"bench-timing-{i}"}))["metrics"]
        ray.append(metrics["step_s_median"])
        steps = int(metrics["step"])
        plain.append(plain_torch_step_s(timing, spec, files, steps))
        print(f"[bench] round {i}: plain torch.distributed {plain[-1] * 1e3:.1f} ms, Ray Train {ray[-1] * 1e3:.1f} ms",
              file=sys.stderr, flush=True)
    plain_s, ray_s = statistics.median(plain), statistics.median(ray)
    positions_per_step = WORKERS * cfg.run.micro_batch_size * cfg.run.grad_accum_steps * cfg.packing.max_tokens
    consumed = positions_per_step / ray_s / WORKERS  # what one worker's steps eat
    result = {
        "ray_train_vs_plain_torch": round(ray_s / plain_s, 3),
        "packing_efficiency": round(loader["packing_efficiency"], 4),
        "loader_headroom": round(loader["local_reader"] / consumed, 1),
        "step_ms_ray_train": [round(x * 1e3, 1) for x in ray],
        "step_ms_plain_torch": [round(x * 1e3, 1) for x in plain],
        "timed_steps": steps,
        "loader_positions_per_s_one_core": round(loader["local_reader"]),
        "train_positions_per_s_per_worker": round(consumed),
        "ray_data_positions_per_s_with_startup": round(loader["ray_data"]),
        "ray_data_first_batch_s": round(loader["ray_data_first_batch_s"], 1),
        **loss_step,
    }
    if not args.quick:
        problems = load_eval_prompts("arithmetic:200", exclude=trained_questions([run]))
        pair = accuracy_pair(run, str(work / "ckpt"), files, problems, args.seeds)
        result.update(student_acc_sft=statistics.mean(pair["sft"]["accuracy"]),
                      student_acc_kd=statistics.mean(pair["kd"]["accuracy"]),
                      teacher_acc=evaluate("potstill:arithmetic-teacher", problems)["accuracy"],
                      student_acc_sft_per_seed=pair["sft"]["accuracy"], student_acc_kd_per_seed=pair["kd"]["accuracy"],
                      accuracy_steps=pair["sft"]["steps"], eval_problems=len(problems))
    # The plain rounds above ran beside the idle Ray cluster (raylet, GCS, dashboard, Ray Data's actors); on a
    # machine with one core per worker their wake-ups cost the step too. One more round without it shows how much.
    import ray

    ray.shutdown()
    result["step_ms_plain_torch_without_ray_running"] = round(plain_torch_step_s(timing, spec, files, steps) * 1e3, 1)
    result["machine"] = {"cpus": os.cpu_count(), "workers": WORKERS, "torch_threads_per_worker": 1,
                         "load_avg_1m_at_end": round(os.getloadavg()[0], 1)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
