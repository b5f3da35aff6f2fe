from potstill.pipelines.generate.reasoning import has_one_think_block, split_reasoning


def test_split_think_block():
    assert split_reasoning("<think>\n7+9=16\n</think>\n936") == ("7+9=16", "936")


def test_template_opened_think_only_close_tag():
    assert split_reasoning("steps here</think> 42") == ("steps here", "42")


def test_no_think_block():
    assert split_reasoning("  42 \n") == (None, "42")


def test_unclosed_think_is_partial_reasoning_and_empty_answer():
    assert split_reasoning("<think>still going") == ("still going", "")


def test_answer_after_the_block_is_stripped_and_may_be_empty():
    assert split_reasoning("<think>\nx\n</think>\n 936 \n") == ("x", "936")
    assert split_reasoning("<think>\nx\n</think>\n") == ("x", "")


def test_one_think_block_opens_the_completion_and_closes_once():
    assert has_one_think_block("  <think>\nx\n</think>\n936")
    assert not has_one_think_block("936")
    assert not has_one_think_block("x</think>936")
    assert not has_one_think_block("<think>\nx\n</think>\n</think>1")
    assert not has_one_think_block("<think>\nx")
