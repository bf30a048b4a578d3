"""The bearer token's scheme is read in any case (RFC 6750), as a caller of a protected server
may send it; the refusals of requests that cost more than they weigh: tests/e2e/test_costs.py."""

from pipeserve.server.edge.security import bearer_accepted


def test_the_bearer_scheme_is_read_in_any_case():
    for scheme in ("Bearer", "bearer", "BEARER"):
        assert bearer_accepted([("authorization", f"{scheme} tok")], [b"tok"])
    assert not bearer_accepted([("authorization", "Basic tok")], [b"tok"])
