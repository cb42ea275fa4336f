"""Ports chosen for processes that start later are never handed out twice."""

from __future__ import annotations

from sluice.bench.harness.ports import free_port_block, held_port


def test_held_ports_are_distinct_even_before_anything_binds_them() -> None:
    # Three replicas take four ports each before any starts: a repeat makes two of a
    # replica's listeners collide (it exits at once).
    picks = [held_port() for _ in range(400)]
    assert len(set(picks)) == len(picks)


def test_a_block_below_the_ephemeral_range_avoids_ports_already_held() -> None:
    held = {held_port() for _ in range(50)}
    first = free_port_block(8, below_ephemeral=True)
    block = set(range(first, first + 8))
    assert block.isdisjoint(held)
    again = free_port_block(8, below_ephemeral=True)
    assert set(range(again, again + 8)).isdisjoint(block)
