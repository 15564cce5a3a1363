"""Which group member runs which task, and which members keep standby copies of its state.

Pure: the Kafka assignor (`flowgraph.runtime.kafka_assignor`) gathers every member's
`MemberState` from the group protocol, calls `assign` and hands the result back; nothing
here knows about Kafka. A task is ``(sub-topology id, partition)`` and reads that partition
of every source topic of its sub-topology, so co-partitioned topics always travel together.

The rules, in order of weight:

1. every task has exactly one active member; a stateful task has ``standby_replicas``
   standbys (default: one when the group has two members or more), never on its active's
   member and never two on one member;
2. balance: active counts per member differ by at most one, for stateful tasks alone too
   (so standby counts can differ by at most one as well);
3. state: as few stateful tasks as balance allows go to a member holding no copy of their
   state (neither a standby's nor its own from running it), since there a task restores
   its whole changelog, where a copy restores only the tail;
4. stickiness: a member keeps the active tasks it had, as far as balance and rule 3 allow:
   it hands one over only to a member holding a copy of it, and only to let a task with no
   other copy with room land on state (see `_land_on_state`); a task that must move goes
   to the member whose copy of its state is most caught up (its standby, usually), the
   tasks with the best copies choosing first (unless that strands another task away from
   its state), and standbys go where state already is;
5. spread: each sub-topology's tasks go to different members where that costs nothing.

Ties are broken by member id, so every member computing this gets the same answer.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping

import attrs

from planner.physical import PhysicalPlan

__all__ = [
    "MemberAssignment",
    "MemberState",
    "TaskId",
    "Topology",
    "assign",
    "standby_count",
    "topology",
]

TaskId = tuple[int, int]
"""``(sub-topology id, partition)``."""


def _topics(value: Mapping[int, Iterable[str]]) -> dict[int, tuple[str, ...]]:
    return {sub: tuple(names) for sub, names in value.items()}


def _counts(value: Mapping[int, int]) -> dict[int, int]:
    return dict(value)


def _subs(value: Iterable[int]) -> frozenset[int]:
    return frozenset(value)


@attrs.frozen
class Topology:
    """What the assignor needs of a plan: the tasks, what they read, which keep state."""

    topics: Mapping[int, tuple[str, ...]] = attrs.field(converter=_topics)
    """Sub-topology id -> its source topics (repartition topics included)."""
    partitions: Mapping[int, int] = attrs.field(converter=_counts)
    """Sub-topology id -> its number of tasks."""
    stateful: frozenset[int] = attrs.field(converter=_subs)
    """Sub-topologies whose steps own a store: only their tasks get standbys."""

    def tasks(self) -> list[TaskId]:
        """Every task, sorted; a sub-topology that reads no topic has none to assign."""
        return sorted(
            (sub, p)
            for sub, count in self.partitions.items()
            if self.topics.get(sub)
            for p in range(count)
        )

    def partitions_of(self, task: TaskId) -> list[tuple[str, int]]:
        """The topic partitions task `task` reads."""
        sub, p = task
        return [(topic, p) for topic in self.topics.get(sub, ())]


def topology(plan: PhysicalPlan) -> Topology:
    """The `Topology` of a physical plan."""
    store_steps = {s.step for s in plan.stores}
    return Topology(
        topics={sub.id: sub.source_topics for sub in plan.subtopologies},
        partitions={sub.id: sub.partitions for sub in plan.subtopologies},
        stateful=frozenset(
            sub.id for sub in plan.subtopologies if store_steps.intersection(sub.step_ids)
        ),
    )


def _tasks(value: Iterable[TaskId]) -> frozenset[TaskId]:
    return frozenset((int(s), int(p)) for s, p in value)


def _offsets(value: Mapping[TaskId, int]) -> dict[TaskId, int]:
    return {(int(s), int(p)): int(o) for (s, p), o in value.items()}


@attrs.frozen
class MemberState:
    """What a member tells the group when it joins: the tasks it ran and the state it holds."""

    active: frozenset[TaskId] = attrs.field(default=frozenset(), converter=_tasks)
    standby: frozenset[TaskId] = attrs.field(default=frozenset(), converter=_tasks)
    offsets: Mapping[TaskId, int] = attrs.field(factory=dict, converter=_offsets)
    """Per task whose state this member holds locally, the sum of its stores' changelog
    positions: higher is more caught up; -1 or absent is none."""


@attrs.frozen
class MemberAssignment:
    """A member's share: the tasks it runs and those it keeps standby state for."""

    active: frozenset[TaskId] = attrs.field(default=frozenset(), converter=_tasks)
    standby: frozenset[TaskId] = attrs.field(default=frozenset(), converter=_tasks)


def standby_count(standby_replicas: int | None, members: int) -> int:
    """Standbys per stateful task: the setting (default 1), at most one per other member."""
    wanted = 1 if standby_replicas is None else standby_replicas
    return max(0, min(wanted, members - 1))


class _Caps:
    """Capacities ``base`` per member plus `tokens` members allowed one more, given out on
    demand to members in `token_ok`: whoever ends up full, counts differ by at most one."""

    def __init__(self, base: int, tokens: int, token_ok: Iterable[str]) -> None:
        self.base = base
        self.tokens = tokens
        self.token_ok = set(token_ok)
        self.forced: set[str] = set()
        """Members whose cap is ``base + 1`` whatever the tokens."""
        self.granted: set[str] = set()

    def cap(self, member: str) -> int:
        return self.base + (member in self.forced or member in self.granted)

    def room(self, member: str, count: int) -> bool:
        """True when `member`, holding `count`, may take one more (granting a token if so)."""
        if count < self.cap(member):
            return True
        return (
            count == self.base
            and self.tokens > 0
            and member in self.token_ok
            and member not in self.granted
        )

    def take(self, member: str, count: int) -> None:
        """`member`, holding `count`, takes one more (call only after `room` said yes)."""
        if count >= self.cap(member):
            self.granted.add(member)
            self.tokens -= 1


def _offset(states: Mapping[str, MemberState], member: str, task: TaskId) -> int:
    state = states.get(member)
    if state is None:
        return -1
    return state.offsets.get(task, -1)


def assign(
    topo: Topology, members: Mapping[str, MemberState], standby_replicas: int | None
) -> dict[str, MemberAssignment]:
    """Every task to one active member, standbys for the stateful ones (see module doc)."""
    ids = sorted(members)
    if not ids:
        return {}
    tasks = topo.tasks()
    stateful = [t for t in tasks if t[0] in topo.stateful]
    stateless = [t for t in tasks if t[0] not in topo.stateful]
    claims = _claims(tasks, members)
    active: dict[str, set[TaskId]] = {m: set() for m in ids}
    m = len(ids)

    caps_s = _Caps(len(stateful) // m, len(stateful) % m, ids)
    _place_active(stateful, ids, members, claims, caps_s, active)
    _land_on_state(stateful, ids, members, claims, caps_s.base, active)
    _swap_to_best_copies(stateful, ids, members, claims, active)
    heavy = {mid for mid in ids if len(active[mid]) > caps_s.base}
    base_l, extra_l = divmod(len(stateless), m)
    light = [mid for mid in ids if mid not in heavy]
    if extra_l <= len(light):  # extras go where no stateful extra is, so totals differ by <= 1
        caps_l = _Caps(base_l, extra_l, light)
    else:
        caps_l = _Caps(base_l, extra_l - len(light), heavy)
        caps_l.forced.update(light)
    _place_active(stateless, ids, members, claims, caps_l, active)

    standby = _place_standbys(stateful, ids, members, active, standby_count(standby_replicas, m))
    return {
        mid: MemberAssignment(active=frozenset(active[mid]), standby=frozenset(standby[mid]))
        for mid in ids
    }


def _claims(tasks: Iterable[TaskId], members: Mapping[str, MemberState]) -> dict[TaskId, str]:
    """Task -> the member that ran it before; of several, the most caught up (then lowest id)."""
    known = set(tasks)
    out: dict[TaskId, str] = {}
    for mid in sorted(members):
        state = members[mid]
        for task in state.active:
            if task not in known:
                continue
            held = out.get(task)
            if held is None or _offset(members, mid, task) > _offset(members, held, task):
                out[task] = mid
    return out


def _place_active(
    tasks: list[TaskId],
    ids: list[str],
    states: Mapping[str, MemberState],
    claims: Mapping[TaskId, str],
    caps: _Caps,
    active: dict[str, set[TaskId]],
) -> None:
    """Place `tasks` (one class: stateful or stateless) within `caps`, sticky first."""
    mine: dict[str, list[TaskId]] = {mid: [] for mid in ids}
    for task in tasks:
        owner = claims.get(task)
        if owner is not None:
            mine[owner].append(task)
    counts = dict.fromkeys(ids, 0)
    left: list[TaskId] = []
    # Members with the most claims first: they get the extra slots, so the most tasks stay.
    for mid in sorted(ids, key=lambda i: (-len(mine[i]), i)):
        kept = sorted(mine[mid], key=lambda t: (-_offset(states, mid, t), t))
        for task in kept:
            if caps.room(mid, counts[mid]):
                caps.take(mid, counts[mid])
                counts[mid] += 1
                active[mid].add(task)
            else:
                left.append(task)
    claimed = set(claims)
    left += [t for t in tasks if t not in claimed]
    # Tasks with a caught-up copy of their state somewhere first, the best copy first, so
    # they get there before the room is taken.
    best = {t: max((_offset(states, mid, t) for mid in ids), default=-1) for t in left}
    per_sub: dict[tuple[str, int], int] = {}
    for mid in ids:
        for sub, _ in active[mid]:
            per_sub[mid, sub] = per_sub.get((mid, sub), 0) + 1
    for task in sorted(left, key=lambda t: (-best[t], t)):
        sub = task[0]
        open_ = [mid for mid in ids if caps.room(mid, counts[mid])]
        mid = min(
            open_,
            key=lambda i: (
                -_offset(states, i, task),
                per_sub.get((i, sub), 0),
                counts[i] >= caps.base,  # a slot within the base before an extra one
                counts[i],
                i,
            ),
        )
        caps.take(mid, counts[mid])
        counts[mid] += 1
        active[mid].add(task)
        per_sub[mid, sub] = per_sub.get((mid, sub), 0) + 1


def _has_copy(states: Mapping[str, MemberState], member: str, task: TaskId) -> bool:
    """True when `member` holds state of `task` (a restore there reads only the tail)."""
    state = states.get(member)
    return state is not None and (state.offsets.get(task, -1) >= 0 or task in state.active)


def _holders(
    tasks: list[TaskId], ids: list[str], states: Mapping[str, MemberState]
) -> dict[TaskId, list[str]]:
    """Task -> the members holding its state, the best copy first (from the members'
    reports, not by asking every member about every task: most hold few)."""
    found: dict[TaskId, list[str]] = {t: [] for t in tasks}
    for mid in ids:
        state = states.get(mid)
        if state is None:
            continue
        held = {t for t, o in state.offsets.items() if o >= 0} | state.active
        for t in held:
            if t in found:
                found[t].append(mid)
    for t, mids in found.items():
        if len(mids) > 1:
            mids.sort(key=lambda i: (-_offset(states, i, t), i))
    return found


def _land_on_state(
    tasks: list[TaskId],
    ids: list[str],
    states: Mapping[str, MemberState],
    claims: Mapping[TaskId, str],
    base: int,
    active: dict[str, set[TaskId]],
) -> None:
    """Move tasks along chains so that as few as balance allows land where nobody holds
    their state (a full restore).

    `active` is balanced (counts ``base`` or ``base + 1``, every slot filled) and holds
    only `tasks`. A task on a member without its state ("stranded") goes to a member with
    a copy, which hands one of its tasks to another member with a copy of that one, and so
    on, until a member that holds a stranded task hands that one to where the first came
    from. A member with ``base`` tasks may instead keep the extra one and let a member with
    ``base + 1`` hand one on. Each round takes the cheapest such chain over every stranded
    task, a shortest-path search as in min-cost flow, so the placement keeps as many
    previous tasks as any with that few stranded ones. A chain's cost, compared in this
    order: previous tasks moved off their member (less those moved back onto it), tasks
    moved, the ranks of the copies they land on (0: the best); packed in one integer.
    """
    holders = _holders(tasks, ids, states)
    n = len(ids)
    w_move = (n + 1) ** 2  # above any sum of ranks along a chain (at most n + 1 links)
    w_prev = (n + 2) * w_move  # above any count of moves weighed so
    out: dict[str, list[tuple[str, TaskId | None, int]]] = {}
    """Per member, where each of its tasks (or its extra slot) could go, and the cost."""
    full: list[str] = []
    while True:
        where = {t: mid for mid in ids for t in active[mid]}
        stranded = sorted(
            (t for t in tasks if holders[t] and where[t] not in holders[t]),
            key=lambda t: (-_offset(states, holders[t][0], t), t),
        )
        if not stranded:
            return
        now_full = [mid for mid in ids if len(active[mid]) > base]
        if now_full != full:
            full = now_full
            out.clear()
        dist: dict[str, int] = {}
        parent: dict[str, tuple[str | None, TaskId | None]] = {}
        links: dict[str, int] = {}
        for t in stranded:
            for rank, mid in enumerate(holders[t]):
                cost = -(claims.get(t) == mid) * w_prev + w_move + rank
                if mid not in dist or cost < dist[mid]:
                    dist[mid] = cost
                    parent[mid] = (None, t)
                    links[mid] = 1
        queue = deque(mid for mid in ids if mid in dist)
        queued = set(queue)
        while queue:
            mid = queue.popleft()
            queued.discard(mid)
            here = dist[mid]
            steps = out.get(mid)
            if steps is None:
                steps = out[mid] = []
                for u in sorted(active[mid]):
                    if mid not in holders[u]:
                        continue
                    off = claims.get(u) == mid
                    for rank, nxt in enumerate(holders[u]):
                        if nxt != mid:
                            prev = off - (claims.get(u) == nxt)
                            steps.append((nxt, u, prev * w_prev + w_move + rank))
                if len(active[mid]) == base:  # keep one more, and a fuller member hands one on
                    steps += [(nxt, None, 0) for nxt in full]
            for nxt, handed, weight in steps:
                cost = here + weight
                if cost < dist.get(nxt, cost + 1):
                    dist[nxt] = cost
                    parent[nxt] = (mid, handed)
                    links[nxt] = links[mid] + 1
                    if links[nxt] > n:  # a negative cycle: stop rather than loop
                        return
                    if nxt not in queued:
                        queue.append(nxt)
                        queued.add(nxt)
        ends = [
            mid for mid in ids if mid in dist and any(mid not in holders[t] for t in active[mid])
        ]
        if not ends:
            return
        end = min(ends, key=lambda i: (dist[i], i))
        # Walk the chain back to its first task; apply each move.
        moves: list[tuple[str, str, TaskId]] = []
        node = end
        seen: set[str] = set()
        while True:
            if node in seen:
                return
            seen.add(node)
            giver, moved = parent[node]
            if giver is None:
                assert moved is not None
                start = where[moved]
                moves.append((start, node, moved))
                break
            if moved is not None:
                moves.append((giver, node, moved))
            node = giver
        if end != start:  # `end` hands a stranded task to where the first one left
            evicted = min(
                (t for t in active[end] if end not in holders[t]),
                key=lambda t: (start not in holders[t], t),
            )
            moves.append((end, start, evicted))
        for giver, taker, moved in moves:
            active[giver].remove(moved)
            active[taker].add(moved)
            out.pop(giver, None)
            out.pop(taker, None)


def _swap_to_best_copies(
    tasks: list[TaskId],
    ids: list[str],
    states: Mapping[str, MemberState],
    claims: Mapping[TaskId, str],
    active: dict[str, set[TaskId]],
) -> None:
    """Swap moved tasks so that the best copies go to the tasks placed first (rule 4).

    Chains (`_land_on_state`) pick among equally good placements without that order, so a
    task may sit on a worse copy while a member with a better one took a task of lower
    priority. Swap those two when the lower one keeps state (or had none there); each swap
    moves a higher task to a better copy, so this ends.
    """
    best = dict.fromkeys(tasks, -1)
    for mid in ids:
        state = states.get(mid)
        for t, o in state.offsets.items() if state is not None else ():
            if t in best and o > best[t]:
                best[t] = o
    where = {t: mid for mid in ids for t in active[mid]}
    moved = [t for t in tasks if best[t] >= 0 and claims.get(t) != where[t]]
    if not moved:
        return
    new: dict[str, set[TaskId]] = {mid: set() for mid in ids}
    for t in tasks:
        if claims.get(t) != where[t]:
            new[where[t]].add(t)
    order = sorted(moved, key=lambda t: (-best[t], t))
    swapped = True
    while swapped:
        swapped = False
        for t in order:
            here = where[t]
            got = _offset(states, here, t)
            for x in ids:
                if _offset(states, x, t) <= got:
                    continue
                lower = [
                    u
                    for u in new[x]
                    if (-best[u], u) > (-best[t], t)
                    and (_has_copy(states, here, u) or not _has_copy(states, x, u))
                ]
                if not lower:
                    continue
                u = max(lower, key=lambda u: (-best[u], u))
                for task, src, dst in ((t, here, x), (u, x, here)):
                    active[src].remove(task)
                    active[dst].add(task)
                    new[src].discard(task)
                    if claims.get(task) != dst:
                        new[dst].add(task)
                    where[task] = dst
                swapped = True
                break


def _place_standbys(
    tasks: list[TaskId],
    ids: list[str],
    states: Mapping[str, MemberState],
    active: Mapping[str, set[TaskId]],
    replicas: int,
) -> dict[str, set[TaskId]]:
    """`replicas` standbys per task in `tasks`, balanced, where state already is if possible."""
    held: dict[str, set[TaskId]] = {mid: set() for mid in ids}
    if replicas <= 0 or not tasks:
        return held
    owner = {t: mid for mid in ids for t in active[mid]}
    holders: dict[TaskId, set[str]] = {t: set() for t in tasks}
    caps = _Caps(*divmod(replicas * len(tasks), len(ids)), ids)

    def eligible(mid: str, task: TaskId) -> bool:
        return mid != owner[task] and mid not in holders[task]

    def put(mid: str, task: TaskId) -> None:
        caps.take(mid, len(held[mid]))
        held[mid].add(task)
        holders[task].add(mid)

    # 1. Members that hold a task's state keep (or become) its standby, best copies first.
    pairs = sorted(
        (
            (-_offset(states, mid, t), t, mid)
            for t in tasks
            for mid in ids
            if _offset(states, mid, t) >= 0 or t in (states[mid].standby if mid in states else ())
        ),
    )
    for _, task, mid in pairs:
        if len(holders[task]) < replicas and eligible(mid, task) and caps.room(mid, len(held[mid])):
            put(mid, task)
    # 2. The rest to the least loaded members, spreading the standbys of each member's
    # actives (a member that fails hands its tasks to several others) and of each sub-topology.
    per_sub: dict[tuple[str, int], int] = {}
    per_owner: dict[tuple[str, str], int] = {}
    for mid in ids:
        for t in held[mid]:
            per_sub[mid, t[0]] = per_sub.get((mid, t[0]), 0) + 1
            per_owner[mid, owner[t]] = per_owner.get((mid, owner[t]), 0) + 1
    for task in tasks:
        while len(holders[task]) < replicas:
            open_ = [mid for mid in ids if eligible(mid, task) and caps.room(mid, len(held[mid]))]
            if open_:
                mid = min(
                    open_,
                    key=lambda i: (
                        len(held[i]) >= caps.base,
                        per_owner.get((i, owner[task]), 0),
                        per_sub.get((i, task[0]), 0),
                        len(held[i]),
                        i,
                    ),
                )
                put(mid, task)
                per_sub[mid, task[0]] = per_sub.get((mid, task[0]), 0) + 1
                per_owner[mid, owner[task]] = per_owner.get((mid, owner[task]), 0) + 1
            elif not _augment(task, ids, owner, held, holders, caps):
                # No balanced placement exists: rule 1 wins over balance.
                spare = [mid for mid in ids if eligible(mid, task)]
                mid = min(spare, key=lambda i: (len(held[i]), i))
                held[mid].add(task)
                holders[task].add(mid)
    return held


def _augment(
    task: TaskId,
    ids: list[str],
    owner: Mapping[TaskId, str],
    held: dict[str, set[TaskId]],
    holders: dict[TaskId, set[str]],
    caps: _Caps,
) -> bool:
    """Make room for a standby of `task` by moving other standbys along a chain of members
    (breadth first) that ends at a member with room; False if there is no such chain."""
    start = [mid for mid in ids if mid != owner[task] and mid not in holders[task]]
    parent: dict[str, tuple[str, TaskId] | None] = dict.fromkeys(start)
    queue = deque(start)
    while queue:
        mid = queue.popleft()
        if caps.room(mid, len(held[mid])):
            caps.take(mid, len(held[mid]))
            step = parent[mid]
            receiver = mid
            while step is not None:  # move each standby one link down the chain
                giver, moved = step
                held[giver].discard(moved)
                holders[moved].discard(giver)
                held[receiver].add(moved)
                holders[moved].add(receiver)
                receiver = giver
                step = parent[giver]
            held[receiver].add(task)
            holders[task].add(receiver)
            return True
        for other in sorted(held[mid]):
            for nxt in ids:
                if nxt not in parent and nxt != owner[other] and nxt not in holders[other]:
                    parent[nxt] = (mid, other)
                    queue.append(nxt)
    return False
