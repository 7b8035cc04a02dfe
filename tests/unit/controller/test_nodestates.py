"""CTDB's runtime node states and ban credits, on plain data."""

from __future__ import annotations

from pubip.controller import nodestates


def test_a_ban_wins_while_it_lasts_then_the_operation_states_then_health() -> None:
    states = {"n1": "disabled", "n2": "stopped"}
    bans = {"n1": 100.0, "n3": 50.0}
    assert nodestates.effective(states, bans, {"n3", "n4"}, now=60.0) == \
        {"n1": "banned", "n2": "stopped", "n3": "unhealthy", "n4": "unhealthy"}
    assert nodestates.effective(states, bans, set(), now=100.0) == {"n1": "disabled", "n2": "stopped"}
    assert nodestates.expired(bans, now=60.0) == ["n3"]


def test_credits_ban_a_node_that_keeps_runs_from_completing_and_a_good_run_clears_them() -> None:
    credits = nodestates.Credits(limit=3)
    assert credits.failed(["n2"]) == [] and credits.failed(["n2", "n3"]) == []
    assert credits.failed(["n2"]) == ["n2"] and credits.held == {"n3": 1}  # n2 banned, its credits reset
    credits.succeeded()
    assert credits.held == {}
