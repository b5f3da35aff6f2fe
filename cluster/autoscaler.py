"""Ask a Ray autoscaler (KubeRay) for the bundles of replicas that cannot be placed yet.

    requests = CapacityRequests()
    requests.ask(plan.bundles * 4)     # room for 4 replicas in all; one call per change
    requests.ask([])                   # withdraw (the run has what it can place, or it ended)

`ray.autoscaler.sdk.request_resources` sets a standing request for a cluster
shape that can hold these bundles at once; each call replaces the previous
one, and an empty list withdraws it. On a cluster without an autoscaler the
request is recorded and nothing happens. `current_request()` reads back what
the cluster holds (for status and tests).
"""

from __future__ import annotations

import logging

log = logging.getLogger("potstill.controller")


class CapacityRequests:
    """The run's standing autoscaler request (sent only when it changes)."""

    def __init__(self) -> None:
        self.current: list[dict[str, float]] = []

    def ask(self, bundles: list[dict[str, float]]) -> None:
        from ray.autoscaler.sdk import request_resources

        bundles = [dict(b) for b in bundles]
        if bundles == self.current:
            return
        request_resources(bundles=bundles)
        log.info("autoscaler request: %s", f"{len(bundles)} bundle(s)" if bundles else "withdrawn")
        self.current = bundles


def current_request() -> list[dict[str, float]]:
    """The bundles the cluster's standing autoscaler request asks for (autoscaler v2 state or the v1 record)."""
    import json

    from ray.autoscaler.v2.utils import is_autoscaler_v2

    if is_autoscaler_v2():
        from ray.autoscaler.v2.sdk import get_cluster_resource_state
        from ray._private.worker import global_worker

        state = get_cluster_resource_state(global_worker.gcs_client)
        out: list[dict[str, float]] = []
        for constraint in state.cluster_resource_constraints:
            for request in constraint.resource_requests:
                out += [dict(request.request.resources_bundle)] * request.count
        return out
    from ray.autoscaler._private.constants import AUTOSCALER_RESOURCE_REQUEST_CHANNEL
    from ray.experimental.internal_kv import _internal_kv_get

    raw = _internal_kv_get(AUTOSCALER_RESOURCE_REQUEST_CHANNEL)
    return [dict(b) for b in json.loads(raw)] if raw else []
