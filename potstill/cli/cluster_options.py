"""What `potstill submit`, `logs` and `stop` share: the cluster address and token options, and the connection.

    jobs = connect(address, token_file)     # a RunJobs on the cluster, or a clear error and exit 2
"""

from __future__ import annotations

from typing import Optional

import typer

from potstill.cli.common import fail

AddressOption = typer.Option(
    None, "--address",
    help="Ray dashboard (Jobs API) URL, e.g. http://127.0.0.1:8265; default: RAY_API_SERVER_ADDRESS, an http RAY_ADDRESS, "
         "else http://127.0.0.1:8265.")
TokenFileOption = typer.Option(
    None, "--token-file",
    help="File holding the cluster's Ray auth token; default: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token. "
         "The token is sent as a header and never printed.")


def connect(address: Optional[str], token_file: Optional[str]):
    """A `RunJobs` on the cluster (Ray is imported here, not at `potstill --help`)."""
    from potstill.cluster.auth_token import TokenError, find_token
    from potstill.cluster.job_submission import ClusterError, RunJobs, resolve_address

    try:
        return RunJobs(resolve_address(address), find_token(token_file))
    except (TokenError, ClusterError) as exc:
        fail(str(exc))
