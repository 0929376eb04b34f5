"""Each routing policy alone, on plain endpoints (devloop.gateway.routing.policies)."""

from __future__ import annotations

from devloop.gateway.routing.endpoints import Endpoint
from devloop.gateway.routing.policies import (
    PROMPT_PREFIX_CHARS,
    SESSION_HEADER,
    AffinityTable,
    affinity_key,
    choose,
    least_outstanding,
    round_robin,
)


def _replicas(*outstanding: int) -> list[Endpoint]:
    return [
        Endpoint("http://engine:8000", f"http://10.0.0.{index}:8000", outstanding=count)
        for index, count in enumerate(outstanding, start=1)
    ]


def test_least_outstanding_picks_the_replica_with_the_fewest_requests_in_flight() -> None:
    replicas = _replicas(3, 1, 2)
    assert least_outstanding(replicas) is replicas[1]


def test_least_outstanding_breaks_ties_by_fewer_served_so_an_idle_pool_alternates() -> None:
    replicas = _replicas(0, 0)
    picks = []
    for _ in range(4):
        endpoint = least_outstanding(replicas)
        endpoint.served += 1
        picks.append(endpoint.url)
    assert picks == [replicas[0].url, replicas[1].url] * 2


def test_round_robin_takes_each_in_turn_whatever_the_load() -> None:
    replicas = _replicas(9, 0, 0)
    assert [round_robin(replicas, turn).url for turn in range(4)] == [
        replicas[0].url, replicas[1].url, replicas[2].url, replicas[0].url
    ]


def test_the_session_header_wins_over_the_user_field_and_the_messages() -> None:
    body = {"model": "m", "user": "alice", "messages": [{"role": "user", "content": "hi"}]}
    assert affinity_key(body, {SESSION_HEADER: "s-1"}) == "session:s-1"
    assert affinity_key(body, {}) == affinity_key({"model": "m", "user": "alice"}, {})
    assert affinity_key(body, {}) != affinity_key({**body, "user": "bob"}, {})


def test_a_conversations_later_turns_share_the_key_of_its_first_turn() -> None:
    first = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    later = [*first, {"role": "assistant", "content": "hi"}, {"role": "user", "content": "more"}]
    other = [first[0], {"role": "user", "content": "a different conversation"}]
    key = affinity_key({"model": "m", "messages": first}, {})
    assert key is not None
    assert affinity_key({"model": "m", "messages": later}, {}) == key
    assert affinity_key({"model": "m", "messages": other}, {}) != key
    assert affinity_key({"model": "other", "messages": first}, {}) != key


def test_prompts_sharing_their_first_characters_share_a_key() -> None:
    prefix = "x" * PROMPT_PREFIX_CHARS
    assert affinity_key({"prompt": prefix + "turn one"}, {}) == affinity_key(
        {"prompt": prefix + "turn two, longer"}, {}
    )
    assert affinity_key({"prompt": "y" + prefix}, {}) != affinity_key({"prompt": prefix}, {})


def test_a_request_with_nothing_to_key_on_has_no_key() -> None:
    assert affinity_key({"model": "m"}, {}) is None
    assert affinity_key(None, {}) is None
    assert affinity_key({"prompt": ["token", "list"], "user": 7}, {}) is None


def test_affinity_keeps_a_key_on_its_first_replica_while_it_is_ready() -> None:
    replicas, table = _replicas(0, 0), AffinityTable()
    first = choose("affinity", replicas, "k", table, turn=0)
    first.outstanding += 5  # busier now: least outstanding alone would move the key
    assert choose("affinity", replicas, "k", table, turn=1) is first
    others = [e for e in replicas if e is not first]
    moved = choose("affinity", others, "k", table, turn=2)  # its replica is not ready
    assert moved is others[0]
    assert choose("affinity", replicas, "k", table, turn=3) is moved  # and stays moved


def test_requests_without_a_key_and_other_policies_ignore_the_table() -> None:
    replicas, table = _replicas(2, 0), AffinityTable()
    table.remember("k", replicas[0])
    assert choose("affinity", replicas, None, table, turn=0) is replicas[1]
    assert choose("least-outstanding", replicas, "k", table, turn=0) is replicas[1]
    assert choose("round-robin", replicas, "k", table, turn=1) is replicas[1]


def test_the_affinity_table_forgets_the_least_recently_used_key_first() -> None:
    replicas, table = _replicas(0, 0), AffinityTable(capacity=2)
    table.remember("a", replicas[0])
    table.remember("b", replicas[1])
    assert table.lookup("a", replicas) is replicas[0]  # "a" is now the most recent
    table.remember("c", replicas[0])
    assert len(table) == 2
    assert table.lookup("b", replicas) is None
    assert table.lookup("a", replicas) is replicas[0]
