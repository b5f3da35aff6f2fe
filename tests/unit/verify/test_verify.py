"""Tests of potstill.pipelines.verify: math/exact answer checks, filters, user callables, Judge.

    .venv/bin/pytest tests/unit/test_verify.py -q
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import potstill
from potstill.pipelines.verify import CallableLoadError, Judge, VerifierError, build_judge, verify
from potstill.pipelines.verify.exact import exact_match, normalize
from potstill.pipelines.verify.filters import failed_filter
from potstill.pipelines.verify.user_callable import load_callable
from potstill.schemas.generation import VerifyConfig

GSM8K_SOLUTION = (
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"
)

# --- math ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("completion", "reference"),
    [
        (GSM8K_SOLUTION, "72"),
        (GSM8K_SOLUTION, "#### 72"),
        ("So she sold 72 clips.\n#### 72", GSM8K_SOLUTION),
        ("The answer is \\boxed{72}.", GSM8K_SOLUTION),
        ("\\boxed{\\frac{1}{2}}", "0.5"),
        ("The probability is $\\boxed{\\dfrac{1}{2}}$.", "\\frac{1}{2}"),
        ("\\boxed{\\frac{\\sqrt{2}}{2}}", "\\sqrt{2}/2"),
        ("$x = \\boxed{2\\sqrt{3}}$", "\\sqrt{12}"),
        ("The solution set is $\\boxed{(1, 2]}$", "(1,2]"),
        ("\\boxed{[0, \\infty)}", "[0,\\infty)"),
        ("27", "27.0"),
        ("27.0", "27"),
        ("The total is 1,000 dollars.", "1000"),
        ("\\boxed{1000}", "1,000"),
        ("It costs \\$18 in all.", "18"),
        ("<think>Let me add 7 and 9 ... 16, carry 1.</think>\n936", "936"),
        ("<think>so maybe 17?</think> The answer is \\boxed{18}.", "#### 18"),
        ("Solution: ... hence $\\boxed{\\textbf{(113) }}$.", "113"),
        ("\\boxed{025}", "25"),
    ],
)
def test_math_equivalent_answers_verify(completion: str, reference: str) -> None:
    assert verify(completion, reference) is True


@pytest.mark.parametrize(
    ("completion", "reference"),
    [
        (GSM8K_SOLUTION, "71"),
        ("So she sold 70 clips.\n#### 70", GSM8K_SOLUTION),
        ("\\boxed{\\frac{1}{3}}", "0.5"),
        ("\\boxed{\\sqrt{3}}", "\\sqrt{2}"),
        ("\\boxed{[1, 2]}", "(1,2]"),  # closedness matters
        ("27.5", "27"),
        ("1,001", "1000"),
        ("<think>the answer is 936</think>\n935", "936"),  # only the text after </think> counts
        ("<think>I believe it is 936 but I ran out of", "936"),  # unclosed think: no answer
        ("", "18"),
        ("I do not know.", "18"),
        ("18", ""),
    ],
)
def test_math_wrong_or_missing_answers_do_not_verify(completion: str, reference: str) -> None:
    assert verify(completion, reference) is False


def test_top_level_package_reexports_verify() -> None:
    assert potstill.verify("\\boxed{\\frac{1}{2}}", "0.5") is True


def test_unknown_method_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"method='fuzzy'.*use one of math, exact"):
        verify("1", "1", method="fuzzy")


def test_math_verify_works_off_the_main_thread() -> None:
    """math-verify's signal.alarm timeouts raise outside the main thread; ours are disabled."""
    results: dict[str, object] = {}

    def work() -> None:
        try:
            assert threading.current_thread() is not threading.main_thread()
            results["ok"] = verify("<think>hmm</think> \\boxed{\\frac{\\sqrt{2}}{2}}", "\\sqrt{2}/2")
            results["wrong"] = verify(GSM8K_SOLUTION, "71")
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            results["error"] = exc

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=60)
    assert "error" not in results, results.get("error")
    assert results == {"ok": True, "wrong": False}

    with ThreadPoolExecutor(max_workers=4) as pool:
        verdicts = list(pool.map(lambda n: verify(f"#### {n}", str(n)), range(32)))
    assert all(verdicts)


def test_import_is_light() -> None:
    code = (
        "import sys, potstill.pipelines.verify;"
        "heavy = [m for m in ('math_verify', 'sympy', 'latex2sympy2_extended', 'ray', 'vllm', 'torch') if m in sys.modules];"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- exact ---------------------------------------------------------------------


def test_exact_normalization() -> None:
    assert normalize("  Paris \n is   nice.  ") == "Paris is nice"
    assert exact_match(" Paris. ", "Paris")
    assert exact_match("27.0", "27") and exact_match("1,000", "1000.00")
    assert not exact_match("paris", "Paris")  # case is kept
    assert not exact_match("27.0", "27", numeric=False)
    assert not exact_match("", "")
    assert verify("<think>It is 27 or 28</think> 27.", "27", method="exact")
    assert not verify("<think>27</think> 28", "27", method="exact")


# --- filters -------------------------------------------------------------------


def test_filters() -> None:
    cfg = VerifyConfig(max_completion_tokens=100, require_reasoning=True)
    ok = {"finish_reason": "stop", "completion_tokens": 100, "has_reasoning": True}
    assert failed_filter(cfg, **ok) is None
    assert "require_stop" in failed_filter(cfg, **{**ok, "finish_reason": "length"})
    assert "max_completion_tokens" in failed_filter(cfg, **{**ok, "completion_tokens": 101})
    assert "require_reasoning" in failed_filter(cfg, **{**ok, "has_reasoning": False})
    lax = VerifyConfig(require_stop=False)
    assert failed_filter(lax, finish_reason="length", completion_tokens=10**6, has_reasoning=False) is None


# --- user callables ------------------------------------------------------------


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An importable module `user_checks_<id>` holding verifier functions."""
    name = f"user_checks_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(
        "def ends_with_reference(completion, reference):\n"
        "    return completion.strip().endswith(str(reference))\n"
        "def no_verdict(completion, reference):\n"
        "    return None\n"
        "def broken(completion, reference):\n"
        "    raise KeyError('oops')\n"
        "class Grader:\n"
        "    @staticmethod\n"
        "    def check(completion, reference):\n"
        "        return True\n"
        "THRESHOLD = 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_load_callable(user_module: str) -> None:
    assert load_callable(f"{user_module}:ends_with_reference")("x = 4", "4") is True
    assert load_callable(f"{user_module}:Grader.check")("a", "b") is True


@pytest.mark.parametrize(
    ("path", "problem", "fix"),
    [
        ("no_colon_here", "is not an import path", "package.module:function"),
        ("potstill_no_such_module_xyz:f", "cannot be imported", "install the package"),
        ("{mod}:missing", "has no attribute 'missing'", "check the name after ':'"),
        ("{mod}:THRESHOLD", "is a int, not a callable", "point it at a function"),
    ],
)
def test_load_callable_errors_name_field_problem_and_fix(user_module: str, path: str, problem: str, fix: str) -> None:
    with pytest.raises(CallableLoadError) as info:
        load_callable(path.format(mod=user_module))
    message = str(info.value)
    assert "verify.function" in message and problem in message and fix in message


def test_build_judge_fails_fast_on_a_bad_function() -> None:
    with pytest.raises(CallableLoadError, match="verify.function"):
        build_judge(VerifyConfig(method="callable", function="potstill_no_such_module_xyz:f"))


# --- Judge ---------------------------------------------------------------------

SAMPLE = {"completion": "<think>7+9</think> 16", "finish_reason": "stop", "completion_tokens": 12, "has_reasoning": True}


def test_judge_methods_and_names(user_module: str) -> None:
    math_judge = build_judge(VerifyConfig())
    assert math_judge.name == "math"
    assert math_judge.judge("\\boxed{16}", "16.0", **SAMPLE) is True
    assert math_judge.judge("15", "16", **SAMPLE) is False
    assert math_judge.judge("16", None, **SAMPLE) is None

    exact_judge = build_judge(VerifyConfig(method="exact"))
    assert exact_judge.name == "exact"
    assert exact_judge.judge("16.", "16", **SAMPLE) is True
    assert exact_judge.judge("16", None, **SAMPLE) is None

    none_judge = build_judge(VerifyConfig(method="none"))
    assert none_judge.name == "none"
    assert none_judge.judge("16", "16", **SAMPLE) is None

    fn = f"{user_module}:ends_with_reference"
    user_judge = build_judge(VerifyConfig(method="callable", function=fn))
    assert isinstance(user_judge, Judge) and user_judge.name == f"callable:{fn}"
    assert user_judge.judge("ignored", "16", **SAMPLE) is True  # gets the whole completion
    assert user_judge.judge("ignored", "17", **SAMPLE) is False
    assert build_judge(VerifyConfig(method="callable", function=f"{user_module}:no_verdict")).judge("16", "16", **SAMPLE) is None


def test_judge_filters_come_first() -> None:
    cfg = VerifyConfig(method="none", max_completion_tokens=10, require_reasoning=True)
    judge = build_judge(cfg)
    assert judge.judge("16", "16", **SAMPLE) is False  # 12 tokens > 10
    assert judge.rejection_reason(finish_reason="stop", completion_tokens=5, has_reasoning=True) is None
    truncated = {**SAMPLE, "finish_reason": "length"}
    assert build_judge(VerifyConfig()).judge("16", "16", **truncated) is False


def test_judge_user_function_errors_are_reported(user_module: str) -> None:
    judge = build_judge(VerifyConfig(method="callable", function=f"{user_module}:broken"))
    with pytest.raises(VerifierError, match=r"verify.function=.*raised KeyError.*fix the function"):
        judge.judge("16", "16", **SAMPLE)


def test_judge_pickles_as_its_config(user_module: str) -> None:
    for cfg in (VerifyConfig(), VerifyConfig(method="callable", function=f"{user_module}:ends_with_reference")):
        judge = pickle.loads(pickle.dumps(build_judge(cfg)))
        assert judge.config == cfg
        assert judge.judge("16", "16", **SAMPLE) is True
