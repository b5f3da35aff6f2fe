"""`Judge`: the configured verifier of one generation run (filters, then the answer check).

    .venv/bin/python -c "from potstill.pipelines.verify import build_judge; from potstill.schemas.generation import VerifyConfig; j = build_judge(VerifyConfig()); print(j.name, j.judge('18', '#### 18', completion='18', finish_reason='stop', completion_tokens=3, has_reasoning=False))"

A Judge is built from `VerifyConfig` alone, so it pickles as its config and
is rebuilt (user callable re-imported) inside the Ray actor that runs it.
`math` and `callable` verdicts run in a verifier process under
`verify.timeout_s` (`isolated.py`): one that takes longer is judged False.
"""

from __future__ import annotations

from typing import Callable

from potstill.pipelines.verify.exact import exact_match
from potstill.pipelines.verify.filters import failed_filter
from potstill.pipelines.verify.isolated import CheckError, IsolatedChecker, shared_checker
from potstill.pipelines.verify.user_callable import FIELD, load_callable
from potstill.schemas.generation import VerifyConfig


class VerifierError(RuntimeError):
    """A user verifier (`verify.function`) raised while judging a sample."""


class Judge:
    """Judges one sample: a failing filter gives False; then the method's verdict (None: no verdict)."""

    def __init__(self, config: VerifyConfig) -> None:
        self.config = config
        self._function: Callable[..., object] | None = None
        if config.method == "callable":
            assert config.function is not None  # VerifyConfig enforces it
            self._function = load_callable(config.function)  # fail at build time, not on the first sample

    @property
    def name(self) -> str:
        """Verifier name stored with every trace: `math`, `exact`, `none` or `callable:<pkg.mod:fn>`."""
        if self.config.method == "callable":
            return f"callable:{self.config.function}"
        return self.config.method

    @property
    def blocking(self) -> bool:
        """Whether a verdict waits on the verifier process (math-verify parses with sympy; a user function is
        unknown), so callers on an event loop run it in a thread; `none` and `exact` are cheap enough inline."""
        return self.config.method in ("math", "callable")

    @property
    def checker(self) -> IsolatedChecker:
        """The verifier process pool that runs this judge's verdicts (shared by the process's judges)."""
        return shared_checker(self.config.timeout_s)

    def warm_up(self) -> None:
        """Start the verifier process now, if this judge needs one (a replica calls it while its engine loads)."""
        if self.blocking:
            self.checker.warm_up()

    def rejection_reason(
        self, *, finish_reason: str, completion_tokens: int, has_reasoning: bool
    ) -> str | None:
        """Why the sample fails the filters, or None when it passes them."""
        return failed_filter(
            self.config,
            finish_reason=finish_reason,
            completion_tokens=completion_tokens,
            has_reasoning=has_reasoning,
        )

    def judge(
        self,
        answer_text: str,
        reference: str | None,
        *,
        completion: str,
        finish_reason: str,
        completion_tokens: int,
        has_reasoning: bool,
    ) -> bool | None:
        """True/False verdict for a sample, or None when there is nothing to check against.

        `answer_text` is the completion after `</think>` (math/exact judge it);
        a user callable gets the whole `completion` and the reference.
        """
        if self.rejection_reason(
            finish_reason=finish_reason, completion_tokens=completion_tokens, has_reasoning=has_reasoning
        ) is not None:
            return False
        method = self.config.method
        if method == "none":
            return None
        if method == "callable":
            return self._call_user(completion, reference)
        if reference is None:
            return None
        if method == "math":
            return bool(self.checker.check("math", answer_text, reference))
        return exact_match(answer_text, reference)

    def _call_user(self, completion: str, reference: str | None) -> bool | None:
        try:
            return self.checker.check("callable", self.config.function, completion, reference)
        except CheckError as exc:
            raise VerifierError(
                f"{FIELD}={self.config.function!r} raised {exc}; "
                "fix the function so it returns True/False (or None for no verdict) for every sample"
            ) from None

    def __reduce__(self) -> tuple[type["Judge"], tuple[VerifyConfig]]:
        # Pickle as the config only; the user callable is re-imported where the Judge lands.
        return (Judge, (self.config,))

    def __repr__(self) -> str:
        return f"Judge(name={self.name!r})"


def build_judge(config: VerifyConfig) -> Judge:
    """The Judge for `config` (raises CallableLoadError if `verify.function` cannot be loaded)."""
    return Judge(config)
