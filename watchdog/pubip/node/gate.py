"""Whether this node may take a public IP by itself now - a fast retake from its record, or a fast takeover
order (pure). Both go through the same blocker; a retake also needs a record whose run did not die mid-way, and
the listener's word (protocol.retake_refused)."""

from __future__ import annotations


def blocker(has_lease: bool, stepped_down: str | None, healthy: bool) -> str | None:
    """Why this node takes nothing now; None: it may."""
    if not has_lease:
        return "this node has no lease (it lost the cluster)"
    if stepped_down:
        return f"this node is {stepped_down}"
    if not healthy:
        return "this node is UNHEALTHY: its IPs move away"
    return None
