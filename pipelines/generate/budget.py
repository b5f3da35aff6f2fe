"""`budget.max_usd`: whether the controller may dispatch one more unit (pure).

    guard = BudgetGuard(cfg.budget.max_usd, spent_before=prior_invocations_usd)
    estimate = UnitCostEstimate(cfg); estimate.update(prompts_with_results, spent_now)
    if guard.allows(spent_now, estimate.usd(inflight_prompts, inflight_chars), estimate.usd(len(unit), chars)):
        dispatch(unit)

A unit is dispatched only while everything spent (this run's earlier
invocations included), plus the estimated cost of the units in flight, plus
the next unit's, stays within the budget. A refused unit waits for the units
in flight, whose results both count as spent and sharpen the estimate; once
nothing is in flight and the next unit still does not fit, the guard stops
for good: what finished is committed, and a re-run with a larger budget
resumes the run. So the run ends within about one unit's cost of the budget,
below it when the estimates hold.

A unit's cost is estimated from what this invocation's results cost per
prompt; before the first result, from the config: for an API teacher every
prompt's characters / 4 in prompt tokens and `n` (rejection sampling: its
`max_samples_per_prompt`) samples of `max_tokens` each, an upper bound; a
self-hosted teacher's time has no prior, so the first round of units is not
held back.
"""

from __future__ import annotations

from potstill.pipelines.generate.cost import Prices
from potstill.schemas.generation import GenerationConfig

CHARS_PER_TOKEN = 4.0


class UnitCostEstimate:
    """Dollars per prompt: measured on this invocation's results, else a prior from the config."""

    def __init__(self, cfg: GenerationConfig):
        self.prices = Prices.of(cfg)
        v, s, api = cfg.verify, cfg.sampling, cfg.teacher.api
        resampling = v.accept_per_prompt is not None
        self._samples = min(v.max_samples_per_prompt, max(s.n, v.accept_per_prompt or 0)) if resampling else s.n
        # Requests that read the prompt: one per prompt, unless each sample (or each re-ask) is its own request.
        self._requests = 1 if (api is None or api.supports_n) and not resampling else self._samples
        self._max_tokens = s.max_tokens
        self.prompts = 0
        self.usd_total = 0.0

    def update(self, prompts: int, usd: float) -> None:
        """So far `prompts` prompts have results, and the invocation has cost `usd`."""
        self.prompts, self.usd_total = prompts, usd

    def usd(self, prompts: int, chars: int) -> float:
        """Estimated cost of `prompts` prompts holding `chars` characters of messages."""
        if self.prompts:
            return self.usd_total / self.prompts * prompts
        prompt_tokens = chars / CHARS_PER_TOKEN * self._requests
        return self.prices.tokens_usd(prompt_tokens, prompts * self._samples * self._max_tokens)


class BudgetGuard:
    """Admits units while spend + in flight + next stays within `max_usd`; `stop()` makes a refusal final."""

    def __init__(self, max_usd: float | None, spent_before: float = 0.0):
        self.max_usd = max_usd
        self.spent_before = spent_before
        self.refusal: str | None = None  # why the last check said no
        self.reason: str | None = None  # set once stopped

    @property
    def stopped(self) -> bool:
        return self.reason is not None

    def allows(self, spent: float, inflight_usd: float, next_usd: float) -> bool:
        if self.max_usd is None:
            return True
        if self.stopped:
            return False
        projected = self.spent_before + spent + inflight_usd + next_usd
        if projected <= self.max_usd:
            return True
        self.refusal = (f"budget.max_usd (${self.max_usd:.4f}) reached: ${self.spent_before + spent:.4f} spent"
                        f"{f' (${self.spent_before:.4f} by earlier invocations)' if self.spent_before else ''}, "
                        f"${inflight_usd:.4f} in flight and ${next_usd:.4f} for the next unit would make "
                        f"${projected:.4f}; re-run with a larger budget.max_usd to resume")
        return False

    def stop(self) -> None:
        """Make the last refusal final (the controller calls it once nothing is in flight to finish)."""
        self.reason = self.refusal or f"budget.max_usd (${self.max_usd}) reached"
