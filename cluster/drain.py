"""Which Ray nodes are draining: what a spot-termination handler or KubeRay's autoscaler announced.

    draining_nodes()                          # {node_id_hex: deadline (UNIX seconds) or None}
    drain_node(node_id, deadline_s=60)        # what a spot-termination handler does (tests, operators)

A node drains when something calls the GCS `DrainNode` RPC (`ray drain-node`,
the autoscaler's idle/preemption termination, a spot notice handler). From
then on Ray places nothing new there; it keeps running what it runs until
the node goes away at (or after) the deadline. The GCS reports draining
nodes with their deadline (`GcsClient.get_draining_nodes`, the call Ray
Serve's controller polls for the same purpose); 0 means no deadline.
"""

from __future__ import annotations

import time


def _gcs_client():
    from ray._private.worker import global_worker

    global_worker.check_connected()
    return global_worker.gcs_client


def draining_nodes(timeout_s: float = 5.0) -> dict[str, float | None]:
    """Draining nodes of the connected cluster: node id (hex) -> deadline in UNIX seconds (None: none)."""
    raw = _gcs_client().get_draining_nodes(timeout=timeout_s)
    return {node: (deadline_ms / 1000.0 if deadline_ms else None) for node, deadline_ms in raw.items()}


def drain_node(node_id: str, deadline_s: float | None, reason: str = "spot preemption notice",
               preemption: bool = True) -> None:
    """Mark `node_id` draining, as a preemption (or idle termination) would, with a deadline `deadline_s` from now."""
    from ray.core.generated import autoscaler_pb2

    kind = "DRAIN_NODE_REASON_PREEMPTION" if preemption else "DRAIN_NODE_REASON_IDLE_TERMINATION"
    deadline_ms = 0 if deadline_s is None else int((time.time() + deadline_s) * 1000)
    accepted, why = _gcs_client().drain_node(node_id, autoscaler_pb2.DrainNodeReason.Value(kind), reason, deadline_ms)
    if not accepted:
        raise RuntimeError(f"Ray refused to drain node {node_id}: {why}")
