from potstill.pipelines.generate.reasoning import split_reasoning


def test_split_think_block():
    assert split_reasoning("<think>\n7+9=16\n</think>\n936") == ("7+9=16", "936")


def test_template_opened_think_only_close_tag():
    assert split_reasoning("steps here</think> 42") == ("steps here", "42")


def test_no_think_block():
    assert split_reasoning("  42 \n") == (None, "42")


def test_unclosed_think_is_partial_reasoning_and_empty_answer():
    assert split_reasoning("<think>still going") == ("still going", "")
