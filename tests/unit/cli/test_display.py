"""A phase's live line fits the terminal: at 80 columns and narrower nothing is cut to "…" but the label.

    .venv/bin/pytest tests/unit/cli/test_display.py -q
"""

from __future__ import annotations

import io
import re

from rich.console import Console

from potstill.cli.display import BAR_MIN, LineParts, Phase, PhaseLine, clock, fit

TRAINING = LineParts("training", "1,500/1,500 steps", ["loss 0.0004", "22,591 tok/s", "epoch 15/15"], "4:12", "ETA 0:31")


def _line(parts: LineParts, width: int, with_bar: bool = True) -> str:
    label, bar, rest = fit(parts, width, with_bar)
    return " ".join(x for x in (label, "━" * bar, rest) if x)


def test_a_line_never_exceeds_the_width_and_keeps_its_count_whole():
    for width in range(20, 201):
        for with_bar in (True, False):
            line = _line(TRAINING, width, with_bar)
            assert len(line) <= width, (width, line)
            assert "1,500/1,500 steps" in line, (width, line)


def test_at_80_columns_the_bar_and_the_first_fields_stay_and_the_last_ones_go_first():
    line = _line(TRAINING, 80)
    assert line.startswith("training ━") and "loss 0.0004" in line and "ETA 0:31" in line
    assert "epoch 15/15" not in line and "…" not in line
    label, bar, _ = fit(TRAINING, 80)
    assert bar >= BAR_MIN
    wide = _line(TRAINING, 200)
    assert wide.endswith("1,500/1,500 steps · loss 0.0004 · 22,591 tok/s · epoch 15/15 · 4:12 ETA 0:31")
    assert "…" in _line(LineParts("a very long phase label", "2/3 prompts"), 20)


def test_a_phase_in_a_log_prints_its_final_line_once_with_its_done_label():
    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=False)
    with Phase(console, "starting", "prompts", done_label="generated") as phase:
        phase.update(done=5, total=10, fields=["traces 5"], status="generating")
        phase.update(done=10)
    assert out.getvalue() == f"generated 10/10 prompts · traces 5 · {clock(0)}\n"


def test_a_terminal_gets_a_bar_that_fills_the_room():
    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=True, color_system="standard")
    phase = Phase(console, "training", "steps")
    phase.update(done=750, total=1500, fields=["loss 0.0004", "22,591 tok/s", "epoch 15/15"])
    console.print(PhaseLine(phase))
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out.getvalue()).splitlines()
    assert len(plain) == 1 and len(plain[0]) <= 80 and "━" in plain[0] and "750/1,500 steps" in plain[0]


def test_clock():
    assert (clock(0), clock(75), clock(3725)) == ("0:00", "1:15", "1:02:05")


def test_the_training_line_counts_epochs_from_one_out_of_the_planned_epochs():
    from potstill.cli.views import training_view

    out = io.StringIO()
    phase = Phase(Console(file=out, width=200, force_terminal=False), "training", "steps")
    update = training_view(phase)
    update({"phase": "training", "step": 1, "total_steps": 1500, "epoch": 0, "epochs": 15, "loss": 2.0})
    assert "epoch 1/15" in phase.fields
    update({"phase": "done", "step": 1500, "total_steps": 1500, "epoch": 15, "epochs": 15, "loss": 0.1})
    assert "epoch 15/15" in phase.fields  # the loop's state after its last epoch reads as the last epoch
    update({"phase": "training", "step": 3, "epoch": 2})  # a snapshot without the planned count
    assert "epoch 3" in phase.fields
