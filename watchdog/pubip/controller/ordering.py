"""When, and from what, the listener issues fast takeover orders (orders.py keeps them, fasttakeover.py plans
them): from the last completed takeover run, or - while a run changes hosts - from what that run says in its
run state (runstate.py): its plan, the nodes it has released, and, once its takes are done, where it left
every IP. Functions over the Listener's state."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from . import fasttakeover

if TYPE_CHECKING:
    from .listener import Listener

log = logging.getLogger("pubip.listener")


class OrderBase(NamedTuple):
    """Where fast takeover orders start from (Listener.order_base)."""
    run: dict[str, Any]  # the plan: generation, public_ips, nodes, algorithm, options, allowed
    run_id: str | None  # the takeover run still carrying it out
    unavailable: set[str]  # nodes that would refuse its orders
    later: frozenset[str] = frozenset()  # IPs not to order yet
    again: bool = False  # try again soon: some nodes will accept its orders later
    cut_short: bool = False  # the run was cut short by a listener restart (cancel_cut_short)


def issue_orders(lst: Listener, exclude: set[str] | None = None, gone: set[str] | None = None) -> None:
    """Tell live watchdogs to take the dead nodes' IPs now, as the verifying run will plan them; none to
    EXCLUDE (nodes the listener does not hear: they may have no lease and could not take anyway)."""
    with lst.order_lock:
        gone = (gone or set()) | lst.wanted_gone  # those of an earlier call that had to wait
        lst.wanted_gone = set()
        lst.orders_wanted = False
        start = lst.order_base(sorted(gone))
        if start is None:  # orders_wanted: not yet (the run's takes are not all done)
            lst.wanted_gone = gone if lst.orders_wanted else set()
            return
        last_run, run_id, unavailable, later = start.run, start.run_id, start.unavailable, start.later
        # GONE: alive but holding nothing, for good; not while a run changes hosts - it may still take an
        # IP on such a node (a dead node's lease is gone: it refuses, or the run skips it)
        dead = sorted(set(lst.dead_nodes()) | (gone if run_id is None else set()))
        if start.cut_short and later:
            # a run cut short takes an IP it moves on the node its plan puts it on, nowhere else: once that node
            # is dead (no lease: it takes nothing) the IP waits for no run (chaos: the cut run had moved it to
            # node4, node4 died, every run after was cancelled by a death or a return - 19.6 s unheld)
            planned = {str(e.get("ip")): e.get("node") for e in last_run["public_ips"] if isinstance(e, dict)}
            later = frozenset(ip for ip in later if planned.get(ip) not in dead)
        generation = int(last_run.get("generation") or 0)
        if lst.orders.blocked(generation):
            if not lst.waiting_logged:
                log.info("Fast takeover waits: orders of generation %d may still be carried out", generation)
            lst.waiting_logged = True
            lst.orders_wanted = True  # watch_liveness tries again once they settle
            lst.wanted_gone = gone
            return
        lst.waiting_logged = False
        lst.orders_wanted = False
        # where earlier orders of this generation put the IPs (a node that took some may be the one dying)
        overlay = lst.orders.overlay(generation)
        base = {**last_run, "public_ips": [{**e, "node": overlay.get(e["ip"], e.get("node"))}
                                           for e in last_run["public_ips"]]}
        try:
            by_node = fasttakeover.orders(base, dead, (exclude or set()) | set(lst.stepping) | unavailable
                                          | lst.orders.refusers(generation))
        except Exception:  # a plan that cannot be made leaves it to the takeover run
            log.exception("No fast takeover: cannot plan it")
            return
        by_node, beside = not_beside_holders(lst, by_node)
        if beside:
            lst.orders_wanted, lst.wanted_gone = True, gone  # again at the next liveness check
        held_back = {e["ip"] for entries in by_node.values() for e in entries if e["ip"] in later}
        if held_back:
            by_node = {n: kept for n, entries in by_node.items() if (kept := [e for e in entries
                                                                               if e["ip"] not in later])}
        if held_back or (start.again and dead):
            lst.orders_wanted, lst.wanted_gone = True, gone  # again once the run got further
        for entries in by_node.values():  # the new holder tickles the connections the dead node had
            for entry in entries:
                holder, conns = lst.connections.get(entry["ip"], ("", []))
                if holder == entry["from"] and conns:
                    entry["tickles"] = conns
        batch = lst.orders.issue(generation, by_node, run_id)
        if not batch and by_node and not held_back and not beside:
            log.info("No fast takeover: generation %d already ordered these IPs%s", generation,
                     " (before the listener restarted)" if generation == lst.orders.sealed else "")
        during = "" if not run_id else f" of takeover run {run_id}, cut short" if start.cut_short \
            else f" during takeover run {lst.running_run} ({run_id})"
        for order in batch:
            log.info("Fast takeover order %d to %s (generation %d%s): %s", order.id, order.node,
                     order.generation, during, ", ".join(f"{i['ip']} from {i['from']}" for i in order.ips))
        if batch:
            # Their owners must not put these IPs back by themselves under this generation (fast retake):
            # each heartbeat answer tells a node the generation it was given away under.
            given_away = lst.last_run.setdefault("declared_dead", {})
            for order in batch:
                for entry in order.ips:
                    if entry["from"] is not None:  # an IP a failed take left untaken was nobody's
                        given_away[entry["from"]] = max(order.generation, int(given_away.get(entry["from"]) or 0))
            lst.last_run["orders_issued_for"] = lst.orders.issued_for
            lst._save_last_run()


def order_dropped(lst: Listener, exclude: set[str]) -> None:
    """Order again the IPs a node took on an order and dropped (Listener.dropped): as a failed run's untaken
    IPs, to the nodes the run's planner picks - none EXCLUDE (not heard lately). Chaos: a partition left the
    listener in the minority with such a node; it lost its lease and released them, nobody retakes them, and
    they waited for a run after the heal (24-30 s among other faults). No run is running (the caller)."""
    with lst.order_lock:
        if lst.running_run is not None:
            return
        generation = int(lst.last_run.get("generation") or 0)
        if not generation or lst.orders.blocked(generation):
            return
        dropped = lst.dropped(generation)
        if not dropped:
            return
        now = time.monotonic()  # a node without a lease refuses: the one that dropped them, at the heal
        leaseless = {n for n in lst.secrets if not lst.has_lease(n, now)} if lst.leases else set()
        refusers = lst.orders.refusers(generation)
        planned = (set(dropped.items()), refusers | {f"no lease: {n}" for n in leaseless})
        if planned == lst.dropped_planned:
            return
        lst.dropped_planned = planned  # a plan that ordered none: again once a refusal or a lease changes it
        start = lst.order_base([])
        if start is None or start.run_id is not None:
            return
        overlay = lst.orders.overlay(generation)
        base = {**start.run, "untaken": sorted(dropped),
                "public_ips": [{**e, "node": None if e["ip"] in dropped else overlay.get(e["ip"], e.get("node"))}
                               for e in start.run["public_ips"]]}
        left_out = exclude | set(lst.stepping) | start.unavailable | refusers | leaseless | set(lst.dead_nodes())
        try:
            by_node = fasttakeover.orders(base, [], left_out)
        except Exception:
            log.exception("No fast takeover: cannot plan it")
            return
        unplaced = sorted(set(dropped) - {str(e["ip"]) for entries in by_node.values() for e in entries})
        by_node, beside = not_beside_holders(lst, by_node)
        if beside:
            lst.dropped_planned = (set(), set())  # planned again at the next liveness check
        if unplaced:  # said once per plan: why an IP held by nobody waits for a run
            log.warning("No fast takeover of %s (dropped) yet: the planner gives it to no node that may take an "
                        "order now (left out: %s)", ", ".join(unplaced), ", ".join(sorted(left_out)) or "none")
        for entries in by_node.values():  # from the node that dropped it: an order may move it again (orders.py)
            for entry in entries:
                entry["from"] = dropped[entry["ip"]]
        batch = lst.orders.issue(generation, by_node)
        for order in batch:
            log.info("Fast takeover order %d to %s (generation %d): %s", order.id, order.node, order.generation,
                     ", ".join(f"{i['ip']} dropped by {i['from']}" for i in order.ips))
        refused = sorted({str(e["ip"]) for entries in by_node.values() for e in entries}
                         - {str(e["ip"]) for order in batch for e in order.ips})
        if refused:  # orders.issue: an IP is ordered again only from the node an earlier order put it on
            log.warning("No fast takeover of %s (dropped) yet: generation %d gives no order for it (ordered before "
                        "from another node, or sealed by a listener restart)", ", ".join(refused), generation)


def cancel_for_dropped(lst: Listener, said: dict[str, Any] | None = None) -> None:
    """A run is running and has changed no host yet, and IPs were dropped since it started (Listener.dropped:
    their holder lost them and cannot retake them - an order's IPs are in no record): cancel it, so that they
    are ordered at once (settle_orders) and a new run follows, instead of waiting for its takes. Chaos under
    load: node4 lost two IPs it had taken on an order 3 s before (a flush) while a run gathered; the run's
    takes placed them 15.6 s later. Each dropped IP cancels one run at most (chaos seed 42: runs cancelled
    again and again for the same orders, 282 in 2 minutes)."""
    generation = int(lst.last_run.get("generation") or 0)
    if not generation or not lst.running_run or lst.run_state is None:
        return
    said = said or lst.runstate.read(lst.run_state)
    if said["cancelled"] or said["changing"]:  # cancelled for a death, say (settle_orders orders them); or too
        return  # late: what its releases let go is no drop
    new = {(generation, ip) for ip in lst.dropped(generation)} - lst.cancelled_for_dropped
    if not new:
        return
    with lst.order_lock:  # the run's end clears run_state under it: no cancel of a finished run
        if lst.run_state is None or not lst.runstate.cancel(lst.run_state):
            return
    lst.cancelled_for_dropped = {key for key in lst.cancelled_for_dropped if key[0] == generation} | new
    log.warning("Takeover run %s cancelled before it changed any host (%s dropped: no node can retake them): "
                "fast takeover now, then a new run", lst.running_run, ", ".join(sorted(ip for _g, ip in new)))


def untaken(planned: Any, achieved: list[Any]) -> list[str]:
    """The IPs a run planned on a node (PLANNED: its public IPs) that where its takes left them (ACHIEVED) are
    on none: their takers refused them before changing anything."""
    to = {str(e.get("ip")): e.get("node") for e in planned or [] if isinstance(e, dict)}
    return sorted(str(e.get("ip")) for e in achieved if isinstance(e, dict)
                  and e.get("node") is None and to.get(str(e.get("ip"))) is not None)


def order_untaken_during_run(lst: Listener, said: dict[str, Any] | None = None) -> None:
    """A run's takes are all done (its state file says where they left the IPs) and its takers refused some
    before changing anything: held by nobody, they are ordered now (order_base), not when the run ends. Chaos
    under load: node2 lost its lease just before it was to take three IPs moved to it; the run then recorded
    and finished for 7 s more, and they waited 10.2 s in all. Once per run and set of IPs."""
    if lst.run_state is None:
        return
    said = said or lst.runstate.read(lst.run_state)
    if not isinstance(said["taken"], dict) or not isinstance(said["taken"].get("public_ips"), list):
        return
    missed = untaken((said["plan"] or {}).get("public_ips"), said["taken"]["public_ips"])
    if not missed or lst.untaken_during == (lst.running_run, missed):
        return
    lst.untaken_during = (lst.running_run, missed)
    log.warning("Takeover run %s: its takers refused %s before changing anything: held by nobody, ordered to "
                "other nodes now", lst.running_run, ", ".join(missed))
    planned = {str(e.get("ip")): e.get("node") for e in (said["plan"] or {}).get("public_ips") or []
               if isinstance(e, dict)}
    lst.issue_orders(exclude=set(lst.suspected) | {str(planned[ip]) for ip in missed})  # they refused: no lease


def order_cut_short_moves(lst: Listener, wait: float = 1.0) -> None:
    """Once after start-up, before the first run: the IPs a run cut short by the restart moved and released but
    did not take yet (cancel_cut_short: "in between") are ordered where its plan puts them, under its generation
    and id - to the nodes it marked (its state file, or their heartbeats' records, say so); its ansible-playbook,
    if it still runs, takes them there too. Only an IP no live node holds (every one reported within WAIT) and
    that no node may retake: the node whose record gives it was released (marked) or is dead. Before, they
    waited for the redo run (chaos seed 33: 17.5 s, with a partition during that run)."""
    cut = lst.last_run.get("cut_short")
    if lst.cut_short_moved or not lst.fast_takeover or not isinstance(cut, dict) \
            or cut.get("generation") != lst.generation():
        return
    lst.cut_short_moved = True
    plan = cut.get("plan") or {}
    moving = {str(ip) for ip in plan.get("moving") or []}
    if not moving or not plan.get("run_id") or not isinstance(plan.get("public_ips"), list):
        return
    await_holds(lst, wait)
    with lst.order_lock:
        # released: its state file says so, or the node's record carries its mark (the release that marks it
        # went through; the listener died before the run could say so)
        with lst.ears_lock:
            marked = {n for n, run_id in lst.marked_by.items() if run_id == str(plan["run_id"])}
        released, dead = set(cut.get("released") or []) | marked, set(cut.get("dead") or [])
        unheld, held, recorded = set(lst.unheld_now()), lst.held_by_others(), lst.last_run_holders()
        by_node: dict[str, list[dict[str, Any]]] = {}
        for e in plan["public_ips"]:
            ip, to, src = str(e.get("ip")), e.get("node"), recorded.get(str(e.get("ip")))
            if ip not in moving or ip not in unheld or ip in held or to not in released - dead \
                    or not lst.alive.get(str(to), True):
                continue
            if src is not None and src not in released | dead and lst.alive.get(src, True):
                continue  # its record gives it this IP and the run did not release it: it may retake it
            by_node.setdefault(str(to), []).append({"ip": ip, "interfaces": e.get("interfaces"), "from": None})
        for order in lst.orders.issue(int(plan["generation"]), by_node, str(plan["run_id"])):
            log.info("Fast takeover order %d to %s (generation %d of takeover run %s, cut short): %s, moved by it",
                     order.id, order.node, order.generation, plan["run_id"], ", ".join(i["ip"] for i in order.ips))


def order_untaken_at_start(lst: Listener, wait: float = 1.0) -> None:
    """Once after start-up, before the first run: the IPs a run cut short after its takes left untaken (its
    takers refused them before changing anything: Listener.__init__ adopts it with them) are ordered as after a
    failed run, once every live node has reported what it holds (no order beside a holder). Before, nothing
    ordered them (chaos seed 149571864 under load: a run moved two IPs to a node without a lease, a listener
    restart cut it short, and every run after was cut short or cancelled - 23.4 s unheld)."""
    if lst.untaken_ordered or not lst.fast_takeover or not lst.last_run.get("untaken"):
        return
    lst.untaken_ordered = True
    await_holds(lst, wait)
    lst.issue_orders()


def await_holds(lst: Listener, wait: float) -> None:
    """Until every live node has reported what it holds (unheld_now: [] before), WAIT seconds at most."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and not lst.stopping.is_set():
        with lst.ears_lock:
            if all(n in lst.holds for n in lst.secrets if lst.alive.get(n, True)):
                return
        lst.stopping.wait(0.02)


def not_beside_holders(lst: Listener, by_node: dict[str, list[dict[str, Any]]]
                       ) -> tuple[dict[str, list[dict[str, Any]]], bool]:
    """BY_NODE without the IPs another live node's kernel held at its latest heartbeat: whatever the plan says,
    an order never puts an IP beside a holder; and whether any was left out (the caller tries again soon: that
    holder may be letting go of it - a run's release - or about to be declared dead)."""
    held = lst.held_by_others()
    out = {}
    for node, entries in by_node.items():
        beside = [e for e in entries if held.get(str(e.get("ip")), node) != node]
        for e in beside:
            said = (str(e.get("ip")), node, held[str(e.get("ip"))])
            if said not in lst.beside_logged:
                log.warning("No fast takeover of %s to %s yet: %s's heartbeat says it holds it", *said)
                lst.beside_logged.add(said)
        kept = [e for e in entries if e not in beside]
        if kept:
            out[node] = kept
    return out, out != by_node


def order_base(lst: Listener, gone: list[str]) -> OrderBase | None:
    """What fast takeover orders start from (the caller holds order_lock); None: no orders now.
    During a run changing hosts that is the run itself (runstate.py): it takes only the IPs it moves, so
    the others may be ordered at once - to the nodes it has marked, after their release - and the IPs it
    moves once its takes are all done."""
    if lst.running_run is not None and not lst.tell_run(gone):
        said = lst.runstate.read(lst.run_state) if lst.run_state else lst.runstate.EMPTY
        for run, taken in ((said["taken"], True), (said["plan"], False)):
            if run is None or not isinstance(run.get("public_ips"), list) or not run.get("generation"):
                continue
            # nodes whose release (which marks them) is not done refuse its orders: plan without them; and
            # without the nodes it declared dead, back or not: after it they count as holding nothing until a
            # run gives them IPs (chaos: one back, ordered an IP during the run, kept it while the orders after
            # the run gave it to another - 5.9 s on two hosts)
            unmarked = set(lst.secrets) - set(said["released"])
            unavailable = unmarked | set(said["dead"])
            if taken:  # IPs its takers refused before changing anything are held by nobody: ordered too
                missed = untaken((said["plan"] or {}).get("public_ips"), run["public_ips"])
                return OrderBase({**run, "untaken": missed}, str(run.get("run_id")), unavailable)
            # its takes are not all done: the IPs it moves wait for them, the nodes it has not marked
            # for their release; both may come before the run ends
            return OrderBase(run, str(run.get("run_id")), unavailable,
                             later=frozenset(str(ip) for ip in run.get("moving") or []),
                             again=bool(unmarked & set(run.get("connected") or [])))
        lst.orders_wanted = True  # watch_liveness tries again, until the run says where it puts the IPs
        return None
    # no run, or one cancelled before it changed any host: the last completed run is where the IPs are
    last_run = lst.last_run
    if not last_run.get("public_ips"):
        log.info("No fast takeover: no completed takeover run to start from")
        return None
    generation = int(last_run.get("generation") or 0)
    cut = last_run.get("cut_short")
    if isinstance(cut, dict) and cut.get("generation") == lst.generation() and isinstance(cut.get("plan"), dict) \
            and cut["plan"].get("run_id") and isinstance(cut["plan"].get("public_ips"), list):
        # a run cut short by a listener restart between its first release and its last take (cancel_cut_short):
        # as while it ran - its plan, under its id, to the nodes it marked; the IPs it moves wait for a run (it
        # takes only those, and maybe still does)
        plan = cut["plan"]
        return OrderBase(plan, str(plan["run_id"]), set(lst.secrets) - set(cut.get("released") or [])
                         | set(cut.get("dead") or []), later=frozenset(str(ip) for ip in plan.get("moving") or []),
                         cut_short=True)
    if int(last_run.get("planned_generation") or 0) > generation:
        # It may have moved IPs between nodes it reached: planned from the last completed run, an
        # order could put an IP on a node it did not reach beside the node it moved that IP to.
        log.info("No fast takeover: takeover run generation %s failed after changing hosts; the next "
                 "run finds where the IPs are", last_run["planned_generation"])
        return None
    floor = lst.generation_floor()
    if floor > generation:  # a host reports a newer record: a run the listener did not see end
        log.info("No fast takeover: a host recorded generation %d, newer than the last completed run's %d; the "
                 "next run finds where the IPs are", floor, generation)
        return None
    # after a failed run, nodes that did not record it refuse its generation's orders: plan without them; and
    # without nodes whose record a run still marks (one that declared them dead after their release): they refuse
    # every order but that run's (chaos: a death's IPs ordered to such a node, refused, unheld until a run)
    unrecorded = set(lst.secrets) - set(last_run["recorded_on"]) if "recorded_on" in last_run else set()
    with lst.ears_lock:
        marked = {node for node, (_generation, is_marked) in lst.records.items() if is_marked}
    return OrderBase(last_run, None, unrecorded | marked)


def tell_run(lst: Listener, gone: list[str]) -> bool:
    """stop_run, once for each new set of dead nodes during the current run: True when it was cancelled.
    A set of deaths cancels one run at most: the runs after it start knowing them. When the orders that run was
    cancelled for still wait (held back beside a node that holds the IPs), the next run places them (chaos seed
    32: every starting run was cancelled for the same death, 7 s without a run while a dead node's IPs waited).
    Without a death or a node gone, nothing cancels a run (chaos seed 42: orders for IPs a failed run left
    untaken, held back beside a node whose record a run still marked, cancelled 282 runs in 2 minutes)."""
    deaths = frozenset(lst.dead_nodes()) | frozenset(gone)
    key = (lst.run_state or lst.running_run, deaths)
    if lst.run_told is None or lst.run_told[0] != key:
        if deaths <= lst.cancelled_for:  # no news (none at all: orders wanted for IPs a run left untaken)
            cancelled = bool(lst.run_state) and lst.runstate.read(lst.run_state)["cancelled"]
        else:
            cancelled = lst.stop_run(gone)
            if cancelled:
                lst.cancelled_for = deaths
        lst.run_told = (key, cancelled)
    return lst.run_told[1]


def stop_run(lst: Listener, gone: list[str]) -> bool:
    """A node died (or GONE: stepped down, holding nothing) while a takeover run runs: cancel the run if it
    has changed no host yet (runstate.py) - then fast takeover orders go out at once and a new run follows;
    else the run skips the dead nodes from now on, and the orders go by what it says (order_base). True
    when the run was cancelled."""
    dead = lst.dead_nodes()
    if lst.run_state is None:
        log.info("No fast takeover yet: takeover run %s cannot be cancelled here (AWX); orders follow it",
                 lst.running_run or "starting")
        return False
    if lst.runstate.read(lst.run_state)["cancelled"] or lst.runstate.cancel(lst.run_state):
        log.warning("Takeover run %s cancelled before it changed any host (%s): fast takeover now, "
                    "then a new run", lst.running_run or "starting",
                    ", ".join([f"{n} dead" for n in dead] + [f"{n} stepped down" for n in gone]))
        return True
    if not dead:
        return False  # nodes that stepped down hold nothing and take nothing: the run goes on with them
    lst.runstate.declare_dead(lst.run_state, dead)
    log.info("Takeover run %s is changing hosts: it skips %s (dead) from now on; fast takeover orders for "
             "what it does not take", lst.running_run, ", ".join(dead))
    return False
