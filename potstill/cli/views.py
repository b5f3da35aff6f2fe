"""How the jobs' progress reports read on a phase line (display.Phase), shared by the commands that run them.

    on_progress = generation_view(phase)     # potstill generate, potstill demo: run_generation's GenerationStatus
    on_progress = training_view(phase)       # potstill train, potstill demo: run_training's snapshots
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from potstill.cli.display import Phase
from potstill.schemas.results import GenerationStatus


def _usd(value: float) -> str:
    return f"${value:,.4f}" if value < 100 else f"${value:,.2f}"


def generation_view(phase: Phase) -> Callable[[GenerationStatus], None]:
    """Feeds `run_generation`'s progress to `phase`: prompts done, verified share, tokens/s, traces, replicas, $
    (the last fields go first on a narrow terminal)."""

    def update(p: GenerationStatus) -> None:
        t = p.totals
        judged = t.verified + t.rejected
        fields = [f"verified {t.verified / judged:.0%}" if judged else "verified -"]
        if p.tokens_per_s:
            fields.append(f"{p.tokens_per_s:,.0f} tok/s")
        fields.append(f"traces {t.traces:,}")
        ready = sum(r.state == "ready" for r in p.replicas)
        if p.target_replicas > 1 or p.pending:
            fields.append(f"replicas {ready}/{p.target_replicas}" + (f" ({len(p.pending)} pending)" if p.pending else ""))
        if p.replicas_replaced:
            fields.append(f"{p.replicas_replaced} replaced")
        if p.spent_usd:
            fields.append(_usd(p.spent_usd))
        phase.update(done=p.prompts_done, total=p.prompts_total or 0, fields=fields, status=p.phase)

    return update


def training_view(phase: Phase) -> Callable[[dict[str, Any]], None]:
    """Feeds `run_training`'s progress snapshots to `phase`: steps, loss, tokens/s, epoch."""

    def update(p: dict[str, Any]) -> None:
        loss, tps, epoch = p.get("loss"), p.get("tokens_per_s"), p.get("epoch")
        fields = [f"loss {loss:.4f}" if isinstance(loss, (int, float)) else "loss -"]
        if isinstance(tps, (int, float)):
            fields.append(f"{tps:,.0f} tok/s")
        if isinstance(epoch, int):  # posted 0-based (the loop's state); shown 1-based, out of the planned epochs
            epochs = p.get("epochs")
            fields.append(f"epoch {min(epoch + 1, epochs)}/{epochs}" if isinstance(epochs, int) else f"epoch {epoch + 1}")
        phase.update(done=p.get("step", 0), total=p.get("total_steps") or 0, fields=fields, status=p.get("phase"))

    return update
