"""The shipped task: synthetic multi-digit additions with step-by-step carry reasoning.

`problems` (questions, reasoning, answers, held-out splits) and `teacher_build`
(trains the tiny teacher shipped in `potstill/assets/arithmetic-teacher`).
"""
