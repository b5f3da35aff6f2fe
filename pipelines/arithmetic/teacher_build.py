"""Train the shipped arithmetic teacher: a tiny character-level Llama that reasons before it answers.

    python -m potstill.pipelines.arithmetic.teacher_build --out potstill/assets/arithmetic-teacher --seed 0

Builds a character-level tokenizer with a chat template and a 2-layer Llama,
trains it on training-split additions of 1-4 digit operands (3 digits weighted
double; `potstill.pipelines.arithmetic.problems`) with the loss on the completion only,
scores it on held-out problems of each digit count (greedy and temperature
0.6), and writes a Hugging Face folder that vLLM and transformers load
offline, plus `training_info.json` with how it was made. The same seed gives
a byte-identical folder on the same machine and library versions. The model
has only seen single user turns and operands of 1-4 digits.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from potstill.pipelines.arithmetic import problems as arithmetic
from potstill.pipelines.generate.reasoning import THINK_CLOSE, THINK_OPEN, has_one_think_block, split_reasoning

if TYPE_CHECKING:
    import torch
    from tokenizers import Tokenizer

PAD, UNK, SYSTEM, USER, ASSISTANT, END = "<|pad|>", "<|unk|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"
SPECIAL_TOKENS = [PAD, UNK, SYSTEM, USER, ASSISTANT, END]
# Added but not special: they must survive `skip_special_tokens` when vLLM detokenizes.
REASONING_TOKENS = [THINK_OPEN, THINK_CLOSE]
CHARS = ["\n"] + [chr(c) for c in range(32, 127)]

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] -%}"
    "{{ raise_exception('role must be system, user or assistant, got ' + message['role']) }}"
    "{%- endif -%}"
    "<|{{ message['role'] }}|>{{ message['content'] }}<|end|>"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)
MAX_POSITIONS = 512
# Operand digit counts drawn per training example; 3 is repeated to weight the shipped task.
DIGITS_CHOICES = (1, 2, 3, 3, 4)


def build_tokenizer() -> "Tokenizer":
    """One token per printable ASCII character and newline, plus the chat and reasoning tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders
    from tokenizers.models import BPE

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + REASONING_TOKENS + CHARS)}
    # BPE without merges over the raw text is exactly character-level.
    tokenizer = Tokenizer(BPE(vocab=vocab, merges=[], unk_token=UNK))
    tokenizer.decoder = decoders.Fuse()
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in REASONING_TOKENS])
    return tokenizer


def render_prompt(question: str) -> str:
    """The chat template's output for one user turn plus the generation prompt (kept equal by a test)."""
    return f"{USER}{question}{END}{ASSISTANT}"


def save_tokenizer(tokenizer: "Tokenizer", out: Path) -> None:
    """Write tokenizer.json, tokenizer_config.json (with the chat template) and special_tokens_map.json."""
    tokenizer.save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": CHAT_TEMPLATE,
        "eos_token": END,
        "pad_token": PAD,
        "unk_token": UNK,
        "bos_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": MAX_POSITIONS,
        "padding_side": "left",
    }
    _write_json(out / "tokenizer_config.json", config)
    _write_json(out / "special_tokens_map.json", {"eos_token": END, "pad_token": PAD, "unk_token": UNK})


def build_model(tokenizer: "Tokenizer", hidden: int, layers: int, heads: int, intermediate: int) -> Any:
    """A small LlamaForCausalLM; head_dim = hidden // heads must be >= 64 (vLLM CPU attention)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if hidden % heads or hidden // heads < 64:
        raise ValueError(f"hidden={hidden}, heads={heads} give head_dim {hidden / heads}; vLLM CPU needs an integer head_dim >= 64, lower heads")
    vocab_size = -(-tokenizer.get_vocab_size() // 64) * 64
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        head_dim=hidden // heads,
        max_position_embeddings=MAX_POSITIONS,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.token_to_id(END),
        pad_token_id=tokenizer.token_to_id(PAD),
    )
    return LlamaForCausalLM(config)


def make_batch(tokenizer: "Tokenizer", pairs: list[tuple[int, int]]) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Right-padded input ids and labels that are -100 everywhere except the completion and its `<|end|>`."""
    import torch

    prompts = tokenizer.encode_batch([render_prompt(arithmetic.question_text(a, b)) for a, b in pairs])
    completions = tokenizer.encode_batch([arithmetic.completion_text(a, b) + END for a, b in pairs])
    seqs = [(p.ids, c.ids) for p, c in zip(prompts, completions)]
    width = max(len(p) + len(c) for p, c in seqs)
    pad = tokenizer.token_to_id(PAD)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    labels = torch.full((len(seqs), width), -100, dtype=torch.long)
    for row, (p, c) in enumerate(seqs):
        ids[row, : len(p) + len(c)] = torch.tensor(p + c)
        labels[row, len(p) : len(p) + len(c)] = torch.tensor(c)
    return ids, labels


def generate(model: Any, tokenizer: "Tokenizer", questions: list[str], temperature: float, seed: int, max_new_tokens: int = 256) -> list[str]:
    """Batched decoding with a KV cache (greedy at temperature 0); questions in a batch must render to equal lengths."""
    import torch

    end, pad = tokenizer.token_to_id(END), tokenizer.token_to_id(PAD)
    prompts = [e.ids for e in tokenizer.encode_batch([render_prompt(q) for q in questions])]
    if len({len(p) for p in prompts}) != 1:
        raise ValueError("questions render to prompts of different lengths; group them by length before calling generate")
    generator = torch.Generator().manual_seed(seed)
    out = model(input_ids=torch.tensor(prompts), use_cache=True)
    finished = torch.zeros(len(prompts), dtype=torch.bool)
    steps = []
    for _ in range(max_new_tokens):
        logits = out.logits[:, -1, :].float()
        if temperature > 0:
            probs = torch.softmax(logits / temperature, dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        else:
            nxt = logits.argmax(dim=-1)
        nxt = torch.where(finished, torch.full_like(nxt, pad), nxt)
        steps.append(nxt)
        finished |= nxt == end
        if finished.all():
            break
        out = model(input_ids=nxt[:, None], past_key_values=out.past_key_values, use_cache=True)
    rows = torch.stack(steps, dim=1).tolist()
    return [tokenizer.decode([t for t in row if t not in (end, pad)], skip_special_tokens=False) for row in rows]


def held_out_accuracy(model: Any, tokenizer: "Tokenizer", n: int, digits: int, temperature: float, seed: int, batch: int = 250) -> float:
    """Fraction of `n` held-out problems answered exactly after one `<think>` block, decoded by the torch model in training.

    The build scores its model in-process, before any folder exists for vLLM
    to load; a built model is scored by `potstill eval` / `potstill teacher demo`
    (`potstill.pipelines.jobs.evaluate`), the one path that scores a saved model.
    """
    import torch

    problems = arithmetic.fresh_problems(n, digits, seed)
    correct = 0
    model.eval()
    with torch.no_grad():
        for start in range(0, n, batch):
            chunk = problems[start : start + batch]
            outputs = generate(model, tokenizer, [q for q, _ in chunk], temperature, seed + start)
            correct += sum(
                has_one_think_block(o) and split_reasoning(o)[1] == ref for o, (_, ref) in zip(outputs, chunk)
            )
    return correct / n


def score(model: Any, tokenizer: "Tokenizer", eval_n: int, digit_counts: list[int], seed: int) -> dict[str, dict[str, Any]]:
    """Held-out accuracy per digit count: greedy and at temperature 0.6."""
    scores = {}
    for digits in digit_counts:
        n = min(eval_n, len(arithmetic.held_out_pool(digits))) if digits <= 2 else eval_n
        scores[f"{digits}_digits"] = {
            "problems": n,
            "greedy_accuracy": held_out_accuracy(model, tokenizer, n, digits, 0.0, seed),
            "temperature_0.6_accuracy": held_out_accuracy(model, tokenizer, n, digits, 0.6, seed),
        }
        print(f"{digits}-digit held-out: {scores[f'{digits}_digits']}", flush=True)
    return scores


def train(model: Any, tokenizer: "Tokenizer", seed: int, steps: int, batch: int, lr: float, digits_choices: tuple[int, ...], log_every: int = 100) -> float:
    """AdamW with a one-cycle schedule on completion tokens; returns the mean loss of the last 50 steps."""
    import torch

    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    recent: list[float] = []
    started = time.perf_counter()
    for step in range(1, steps + 1):
        ids, labels = make_batch(tokenizer, arithmetic.training_pairs(rng, batch, digits_choices))
        loss = model(input_ids=ids, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        recent = (recent + [loss.item()])[-50:]
        if log_every and step % log_every == 0:
            print(f"step {step}/{steps} loss {sum(recent) / len(recent):.4f} ({time.perf_counter() - started:.0f}s)", flush=True)
    return sum(recent) / len(recent)


def build_teacher(
    out_dir: str | Path,
    seed: int = 0,
    steps: int = 3000,
    batch: int = 64,
    lr: float = 3e-3,
    digits_choices: tuple[int, ...] = DIGITS_CHOICES,
    hidden: int = 128,
    layers: int = 2,
    heads: int = 2,
    intermediate: int = 512,
    eval_n: int = 1000,
    eval_seed: int = 99,
    threads: int = 2,
    log_every: int = 100,
) -> dict[str, Any]:
    """Build, train, score and save the teacher into `out_dir`; returns training_info.json's content plus the wall time."""
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    previous = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    # Once the loss nears zero, denormal gradients make CPU steps several times slower.
    torch.set_flush_denormal(True)
    try:
        started = time.perf_counter()
        torch.manual_seed(seed)
        tokenizer = build_tokenizer()
        model = build_model(tokenizer, hidden, layers, heads, intermediate)
        final_loss = train(model, tokenizer, seed, steps, batch, lr, digits_choices, log_every)
        train_s = time.perf_counter() - started
        scores = score(model, tokenizer, eval_n, sorted(set(digits_choices) | {3}), eval_seed) if eval_n else {}
        model.generation_config.bos_token_id = None
        model.save_pretrained(out, safe_serialization=True)
        save_tokenizer(tokenizer, out)
    finally:
        torch.set_num_threads(previous[0])
        torch.use_deterministic_algorithms(previous[1])
        torch.set_flush_denormal(False)
    info = {
        "task": "addition with column-by-column carry reasoning (potstill.pipelines.arithmetic.problems)",
        "seed": seed,
        "steps": steps,
        "batch": batch,
        "lr": lr,
        "digits_choices": list(digits_choices),
        "architecture": {"hidden": hidden, "layers": layers, "heads": heads, "intermediate": intermediate},
        "parameters": sum(p.numel() for p in model.parameters()),
        "final_loss": float(f"{final_loss:.3e}"),
        "eval": {"seed": eval_seed, "held_out": scores},
        "threads": threads,
        "torch": torch.__version__,
        "command": f"python -m potstill.pipelines.arithmetic.teacher_build --out {out_dir} --seed {seed} --steps {steps} --batch {batch}",
    }
    # Wall time stays out of the file so a rebuild reproduces the whole folder byte for byte.
    _write_json(out / "training_info.json", info)
    return {**info, "train_seconds": round(train_s, 1)}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="Output folder (Hugging Face layout).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--eval-n", type=int, default=1000, help="Held-out problems scored after training (0 skips).")
    args = parser.parse_args(argv)
    info = build_teacher(args.out, seed=args.seed, steps=args.steps, batch=args.batch, eval_n=args.eval_n)
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
