"""How Ray's actor-death errors become the pool protocol's `ReplicaLost` (with `node_lost` when the node went)."""

from potstill.cluster.ray_pool import _lost


class ActorDiedError(Exception):
    """Stands in for ray.exceptions.ActorDiedError: the same text and `preempted` flag, no Ray needed."""

    def __init__(self, text: str, preempted: bool = False):
        super().__init__(text)
        self.preempted = preempted


def test_an_actor_that_died_with_its_node_is_a_lost_node_not_a_suspect():
    err = _lost(ActorDiedError("The actor died unexpectedly before finishing this task.\n\tclass_name: TeacherReplica\n"
                               "The actor died because its node has died. Node Id: 6e41...\n"))
    assert err.node_lost and str(err).startswith("The actor died because its node has died")


def test_a_preempted_node_is_a_lost_node():
    assert _lost(ActorDiedError("The actor died unexpectedly before finishing this task.", preempted=True)).node_lost


def test_a_killed_or_crashed_actor_is_not_a_lost_node():
    err = _lost(ActorDiedError("The actor died unexpectedly before finishing this task.\n"
                               "The actor is dead because it was killed by `ray.kill`."))
    assert not err.node_lost and str(err) == "ActorDiedError: The actor died unexpectedly before finishing this task."
