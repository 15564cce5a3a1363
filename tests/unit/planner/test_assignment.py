"""The assignor's rules (planner/assignment.py) over random topologies and memberships.

Each round's result is fed back as the members' next `MemberState`, the way a group that
rebalances again and again would: the tasks they ran, their standbys, and offsets for every
task whose state they ever held (older copies lower, standbys behind their active).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowgraph as fg
from planner.assignment import (
    MemberAssignment,
    MemberState,
    TaskId,
    Topology,
    assign,
    standby_count,
    topology,
)

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@st.composite
def topologies(draw: st.DrawFn) -> Topology:
    subs = draw(st.integers(1, 4))
    partitions = {s: draw(st.integers(1, 9)) for s in range(subs)}
    topics = {s: tuple(f"t{s}-{i}" for i in range(draw(st.integers(1, 2)))) for s in range(subs)}
    stateful = draw(st.sets(st.sampled_from(range(subs))))
    return Topology(topics=topics, partitions=partitions, stateful=stateful)


# A round: +name joins, -index leaves (the index-th member, if more than one is left), "="
# rebalances with nobody joining or leaving.
EVENTS = st.lists(
    st.one_of(st.just("="), st.integers(0, 9).map(lambda i: f"-{i}"), st.just("+")),
    min_size=1,
    max_size=6,
)


class Group:
    """Members and what each holds, fed from one round's assignment to the next."""

    def __init__(self, names: list[str]) -> None:
        self.members = list(names)
        self.last: dict[str, MemberAssignment] = {}
        self.offsets: dict[str, dict[TaskId, int]] = {m: {} for m in names}
        self.round = 0
        self.joined = len(names)

    def states(self) -> dict[str, MemberState]:
        return {
            m: MemberState(
                active=self.last[m].active if m in self.last else frozenset(),
                standby=self.last[m].standby if m in self.last else frozenset(),
                offsets=self.offsets[m],
            )
            for m in self.members
        }

    def feed(self, result: Mapping[str, MemberAssignment], topo: Topology) -> None:
        self.round += 1
        self.last = dict(result)
        for m, share in result.items():
            for task in share.active:
                if task[0] in topo.stateful:
                    self.offsets[m][task] = self.round * 10 + 5
            for task in share.standby:
                self.offsets[m][task] = self.round * 10

    def apply(self, event: str) -> None:
        if event == "+":
            name = f"m{self.joined}"
            self.joined += 1
            self.members.append(name)
            self.offsets[name] = {}
        elif event.startswith("-") and len(self.members) > 1:
            gone = self.members.pop(int(event[1:]) % len(self.members))
            del self.offsets[gone]
            self.last.pop(gone, None)


def check_rules(
    topo: Topology, result: Mapping[str, MemberAssignment], members: list[str], replicas: int | None
) -> None:
    """Rules 1 and 2: every task placed once, standbys where they may be, counts balanced."""
    assert sorted(result) == sorted(members)
    actives = [t for share in result.values() for t in share.active]
    assert sorted(actives) == topo.tasks()
    owner = {t: m for m, share in result.items() for t in share.active}
    want = standby_count(replicas, len(members))
    for task in topo.tasks():
        holders = [m for m, share in result.items() if task in share.standby]
        if task[0] in topo.stateful:
            assert len(holders) == want, (task, holders)
            assert owner[task] not in holders
        else:
            assert holders == []
    for counts in (
        [len(s.active) for s in result.values()],
        [sum(t[0] in topo.stateful for t in s.active) for s in result.values()],
        [len(s.standby) for s in result.values()],
    ):
        assert max(counts) - min(counts) <= 1, counts


def has_copy(states: Mapping[str, MemberState], member: str, task: TaskId) -> bool:
    """`member` holds state of `task`: a copy at some offset, or it ran it."""
    return states[member].offsets.get(task, -1) >= 0 or task in states[member].active


def best(states: Mapping[str, MemberState], task: TaskId) -> int:
    """The most caught-up copy of `task`'s state in the group (-1: none)."""
    return max(state.offsets.get(task, -1) for state in states.values())


@SETTINGS
@given(
    topo=topologies(),
    size=st.integers(1, 5),
    events=EVENTS,
    replicas=st.one_of(st.none(), st.integers(0, 3)),
)
def test_rounds_keep_every_rule(
    topo: Topology, size: int, events: list[str], replicas: int | None
) -> None:
    group = Group([f"m{i}" for i in range(size)])
    result = assign(topo, group.states(), replicas)
    check_rules(topo, result, group.members, replicas)
    group.feed(result, topo)
    n_s = sum(t[0] in topo.stateful for t in topo.tasks())
    n_l = len(topo.tasks()) - n_s
    for event in events:
        before = {m: set(group.last[m].active) for m in group.members}
        standbys = {m: set(group.last[m].standby) for m in group.members}
        left = set(before)
        group.apply(event)
        states = group.states()
        result = assign(topo, states, replicas)
        check_rules(topo, result, group.members, replicas)
        m = len(group.members)
        stayed = left & set(group.members)
        # Stickiness: a member that stays keeps what balance allows of its tasks, but for
        # stateful ones it hands to a member holding a copy (to let a task land on state).
        owner = {t: x for x, share in result.items() for t in share.active}
        for name in stayed:
            had_s = {t for t in before[name] if t[0] in topo.stateful}
            had_l = before[name] - had_s
            kept = before[name] & result[name].active
            handed = {t for t in had_s - kept if has_copy(states, owner[t], t)}
            assert len(kept | handed) >= min(len(had_s), n_s // m) + min(len(had_l), n_l // m)
        if set(group.members) == left:  # nobody joined or left: nothing moves
            assert {k: v.active for k, v in result.items()} == {
                k: frozenset(v) for k, v in before.items()
            }
            assert {k: v.standby for k, v in result.items()} == {
                k: frozenset(v) for k, v in standbys.items()
            }

        # Failover: a task that moves goes to the member with the best copy of its state
        # that has room; one with a better copy took only tasks whose best copy was better
        # still (they were placed first) before it was full, or tasks that land on a copy
        # there and would have none where this one went. This holds for the tasks of members
        # that left; a member that stays may hand one to a copy (see stickiness).
        prev = {t for x in stayed for t in before[x] if has_copy(states, owner[t], t)}
        for name, share in result.items():
            for task in share.active - before.get(name, set()):
                if task[0] not in topo.stateful or task in prev:
                    continue
                got = states[name].offsets.get(task, -1)
                for x in group.members:
                    if states[x].offsets.get(task, -1) <= got:
                        continue
                    for other in result[x].active - before.get(x, set()):
                        if other[0] in topo.stateful and not (
                            has_copy(states, x, other) and not has_copy(states, name, other)
                        ):
                            assert (-best(states, other), other) < (-best(states, task), task), (
                                task,
                                x,
                            )
        group.feed(result, topo)


@st.composite
def small_groups(draw: st.DrawFn) -> tuple[Topology, dict[str, MemberState]]:
    """<= 3 members, <= 6 stateful tasks (and a few stateless ones), random copies."""
    names = ["a", "b", "c"][: draw(st.integers(1, 3))]
    n = draw(st.integers(1, 6))
    light = draw(st.integers(0, 3))
    topo = Topology(
        topics={0: ("s",), 1: ("l",)},
        partitions={0: n, 1: light},
        stateful={0},
    )
    ran: dict[str, set[TaskId]] = {m: set() for m in names}
    for task in topo.tasks():
        owner = draw(st.sampled_from([None, *names]))
        if owner is not None:
            ran[owner].add(task)
    states = {}
    for m in names:
        offsets = {
            (0, p): o for p in range(n) if (o := draw(st.sampled_from([-1, -1, 0, 3, 7]))) >= 0
        }
        standby = {t for t in offsets if t not in ran[m]}
        states[m] = MemberState(active=ran[m], standby=standby, offsets=offsets)
    return topo, states


@SETTINGS
@given(group=small_groups(), replicas=st.integers(0, 2))
def test_as_few_tasks_without_state_as_balance_allows(
    group: tuple[Topology, dict[str, MemberState]], replicas: int
) -> None:
    """Brute force over every balanced placement of the stateful tasks: none strands fewer
    tasks away from their state than `assign`, and of those that strand as few, none keeps
    more tasks where they ran."""
    topo, states = group
    names = sorted(states)
    result = assign(topo, states, replicas)
    check_rules(topo, result, names, replicas)
    stateful = [t for t in topo.tasks() if t[0] in topo.stateful]
    ran = {t: m for m in names for t in states[m].active}

    def score(place: Mapping[TaskId, str]) -> tuple[int, int]:
        stranded = sum(not has_copy(states, m, t) for t, m in place.items())
        moved = sum(ran.get(t, m) != m for t, m in place.items())
        return stranded, moved

    got = score({t: m for m in names for t in result[m].active if t in stateful})
    best_score = min(
        score(dict(zip(stateful, choice, strict=True)))
        for choice in itertools.product(names, repeat=len(stateful))
        if max(choice.count(m) for m in names) - min(choice.count(m) for m in names) <= 1
    )
    assert got == best_score


def test_a_full_member_hands_a_task_to_its_standby_so_every_task_lands_on_state() -> None:
    """A (3 tasks) and B (2) survive C (3); A holds the standbys of two of C's tasks, B of
    the third and of one of A's. A hands that one to B and takes both of its standbys'."""
    topo = Topology(topics={0: ("a",)}, partitions={0: 8}, stateful={0})
    states = {
        "A": MemberState(
            active={(0, 0), (0, 1), (0, 2)},
            standby={(0, 5), (0, 7)},
            offsets={(0, 0): 50, (0, 1): 50, (0, 2): 50, (0, 5): 40, (0, 7): 40},
        ),
        "B": MemberState(
            active={(0, 3), (0, 4)},
            standby={(0, 6), (0, 2)},
            offsets={(0, 3): 50, (0, 4): 50, (0, 6): 40, (0, 2): 40},
        ),
    }
    result = assign(topo, states, 1)
    check_rules(topo, result, ["A", "B"], 1)
    assert result["A"].active == {(0, 0), (0, 1), (0, 5), (0, 7)}
    assert result["B"].active == {(0, 3), (0, 4), (0, 6), (0, 2)}
    for m, share in result.items():  # no full restore: each task runs where its state is
        assert all(has_copy(states, m, t) for t in share.active)


@pytest.mark.parametrize("gone", ["w", "x", "y", "z"])
@pytest.mark.parametrize("replicas", [1, 2])
def test_failover_goes_to_the_most_caught_up_standby(gone: str, replicas: int) -> None:
    names = ["w", "x", "y", "z"]
    topo = Topology(topics={0: ("a", "b"), 1: ("c",)}, partitions={0: 8, 1: 4}, stateful={0})
    first = assign(topo, {m: MemberState() for m in names}, replicas)
    # As members report it: active state ahead of standby state, standbys at different
    # positions (the lower the member name, the further behind).
    fed = {
        m: MemberState(
            active=share.active,
            standby=share.standby,
            offsets={
                **{t: 40 + names.index(m) for t in share.standby},
                **dict.fromkeys(share.active & set(topo.tasks()), 50),
            },
        )
        for m, share in first.items()
    }
    del fed[gone]
    second = assign(topo, fed, replicas)
    check_rules(topo, second, sorted(fed), replicas)
    for task in first[gone].active:
        if task[0] == 0:
            standbys = [m for m in sorted(fed) if task in first[m].standby]
            (owner,) = [m for m in fed if task in second[m].active]
            assert owner in standbys
            if owner != standbys[-1]:  # the best copy's member took another of gone's tasks
                assert second[standbys[-1]].active & first[gone].active - {task}
    for m in fed:  # the survivors keep their own tasks
        assert first[m].active <= second[m].active


def test_contested_task_stays_with_the_most_caught_up_member() -> None:
    topo = Topology(topics={0: ("a",)}, partitions={0: 2}, stateful={0})
    states = {
        "x": MemberState(active={(0, 0)}, offsets={(0, 0): 10}),
        "y": MemberState(active={(0, 0)}, offsets={(0, 0): 20}),
    }
    result = assign(topo, states, 1)
    assert result["y"].active == {(0, 0)}
    assert result["x"].active == {(0, 1)}
    assert result["x"].standby == {(0, 0)}  # x holds its state: its standby
    even = {k: MemberState(active={(0, 0)}, offsets={(0, 0): 5}) for k in ("x", "y")}
    assert assign(topo, even, 1)["x"].active == {(0, 0)}  # a tie: the lowest member id


def test_standbys_default_to_one_and_are_capped_by_the_group() -> None:
    topo = Topology(topics={0: ("a",)}, partitions={0: 4}, stateful={0})
    one = assign(topo, {"x": MemberState()}, None)
    assert one["x"].standby == frozenset()
    two = assign(topo, {"x": MemberState(), "y": MemberState()}, None)
    assert len(two["x"].standby) + len(two["y"].standby) == 4
    capped = assign(topo, {"x": MemberState(), "y": MemberState()}, 5)
    assert len(capped["x"].standby) + len(capped["y"].standby) == 4
    none = assign(topo, {"x": MemberState(), "y": MemberState()}, 0)
    assert none["x"].standby == none["y"].standby == frozenset()


def test_a_subtopology_spreads_over_the_members() -> None:
    topo = Topology(topics={0: ("a",), 1: ("b",)}, partitions={0: 3, 1: 3}, stateful=())
    result = assign(topo, {m: MemberState() for m in ("x", "y", "z")}, None)
    for share in result.values():
        assert sorted(sub for sub, _ in share.active) == [0, 1]


def test_deterministic_whatever_the_order_of_members() -> None:
    topo = Topology(topics={0: ("a",), 1: ("b",)}, partitions={0: 5, 1: 3}, stateful={0})
    states = {
        "b": MemberState(active={(0, 1), (1, 2)}, offsets={(0, 1): 3}),
        "a": MemberState(standby={(0, 1)}, offsets={(0, 1): 2, (0, 4): 7}),
        "c": MemberState(),
    }
    reordered = dict(reversed(list(states.items())))
    assert assign(topo, states, 1) == assign(topo, reordered, 1)


def test_unknown_tasks_in_a_member_state_are_ignored() -> None:
    topo = Topology(topics={0: ("a",)}, partitions={0: 2}, stateful={0})
    states = {"x": MemberState(active={(0, 7), (3, 0)}, offsets={(3, 0): 9})}
    assert assign(topo, states, None)["x"].active == {(0, 0), (0, 1)}
    assert assign(topo, {}, None) == {}


@pytest.mark.parametrize("stateful", [False, True])
def test_topology_of_a_plan(stateful: bool) -> None:
    g = fg.Graph("assign")
    s = g.source("clicks", partitions=4)
    if stateful:
        s.key_by(lambda v: v, name="by_value").count(name="counts").changes().to("out")
    else:
        s.map(str).to("out")
    plan = g.plan()
    topo = topology(plan)
    assert topo.tasks()[:4] == [(0, p) for p in range(4)]
    assert topo.partitions_of((0, 2))[0] == ("clicks", 2)
    if stateful:
        counting = [sub.id for sub in plan.subtopologies if "counts" in sub.step_ids]
        assert topo.stateful == frozenset(counting)
        assert topo.partitions_of((counting[0], 1)) == [
            (plan.subtopologies[counting[0]].source_topics[0], 1)
        ]
    else:
        assert topo.stateful == frozenset()
