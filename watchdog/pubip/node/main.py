"""pubip-watchdog: the command - its options, logging, and the scheduler that runs the watchdog (daemon.py):
one APScheduler job per periodic task (the check, the connection lists, the announcements, the monitor hooks),
and threads for the netlink events, the heartbeats, the peers and the lease. SIGTERM stops it cleanly."""

from __future__ import annotations

import argparse
import datetime
import logging
import sys
import threading
import time
from typing import Any

from .. import __version__, logs, protocol, sdnotify
from . import realtime
from .config import DEFAULT_PATH, Config, ConfigError, load
from .daemon import Watchdog
from .metrics import Metrics

log = logging.getLogger("pubip.watchdog")
EXIT_CLEAN, EXIT_FINDING, EXIT_ERROR = 0, 1, 2


def run_forever(dog: Watchdog) -> None:
    from apscheduler.schedulers.blocking import BlockingScheduler

    cfg = dog.cfg
    scheduler = BlockingScheduler(timezone=datetime.UTC)
    dog.scheduler = scheduler
    now = datetime.datetime.now(datetime.UTC)
    every = {"coalesce": True, "max_instances": 1, "misfire_grace_time": None}

    def check() -> None:
        if dog.safe_check():
            sdnotify.notify("WATCHDOG=1")  # a check that hangs stops these, and systemd restarts the watchdog

    scheduler.add_job(check, "interval", seconds=cfg.interval, id="check", next_run_time=now, **every)
    if cfg.tickle_interval and cfg.backend == "listener":
        scheduler.add_job(dog.list_connections, "interval", seconds=cfg.tickle_interval, id="tickles",
                          next_run_time=now, **every)
    if cfg.announce_refresh:
        scheduler.add_job(dog.refresh_announcements, "interval", seconds=cfg.announce_refresh, id="announce",
                          **every)
    if cfg.monitor_interval and cfg.hook_dir:
        # every second at most; the hooks every monitor_interval, and every second while UNHEALTHY
        scheduler.add_job(dog.health.tick, "interval", seconds=min(1.0, cfg.monitor_interval), id="monitor",
                          next_run_time=now, **every)

    def stop(signum: int, _frame: Any) -> None:
        log.info("Watchdog stopping (signal %d)", signum)
        dog.stopped.set()
        dog.requester.stop()
        # Not from the handler itself: the signal may have interrupted the main thread inside the scheduler's
        # executor, holding a lock that shutdown() needs; nor before the scheduler has started.
        threading.Thread(target=shut_down, name="pubip-stop").start()

    def shut_down() -> None:
        deadline = time.monotonic() + 10
        while not scheduler.running and time.monotonic() < deadline:
            time.sleep(0.01)
        scheduler.shutdown(wait=False)

    import signal

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if cfg.realtime:  # before any thread starts: they all inherit it
        why = realtime.enter()
        if why:
            log.warning("No real-time scheduling (%s): on a busy host a lost lease's release may come late; "
                        "give the watchdog CAP_SYS_NICE or CPUSchedulingPolicy=fifo", why)
    if cfg.fast_retake:
        _ = dog.nl.ipr  # pyroute2 loaded now, not in the middle of the first fast retake
    if cfg.netlink:
        threading.Thread(target=dog.netlink_events, name="pubip-netlink", daemon=True).start()
    if cfg.backend == "listener" and cfg.listener is not None:
        for i, url in enumerate(cfg.listener.urls):  # HA listeners: each hears every node
            threading.Thread(target=dog.exchange.run, args=(dog.stopped, url),
                             name="pubip-heartbeat" + (f"-{i + 1}" if i else ""), daemon=True).start()
    if cfg.peers is not None and dog.keeper.on():
        from .peers import Peers

        peers = Peers(cfg.node, cfg.peers.nodes, cfg.peers.port, cfg.peers.bind, cfg.peers.secret, dog.keeper,
                      cfg.heartbeat_interval)
        threading.Thread(target=peers.run, args=(dog.stopped,), name="pubip-peers", daemon=True).start()
        threading.Thread(target=dog.keeper.keep, args=(dog.stopped, dog.release_all, dog.regained),
                         name="pubip-lease", daemon=True).start()
    log.info("Watchdog started on node %s: interval %.2fs, netlink %s, fast retake %s, backend %s, lease %s, "
             "scheduling %s", cfg.node, cfg.interval, "on" if cfg.netlink else "off",
             "on" if cfg.fast_retake else "off", cfg.backend,
             f"{cfg.lease:.2f}s with {len(cfg.peers.nodes)} peers" if dog.keeper.on() and cfg.peers else "off",
             realtime.policy())
    sdnotify.notify("READY=1")
    scheduler.start()


def _logging(cfg: Config, verbose: bool = False) -> None:
    root = logging.getLogger("pubip")
    root.addHandler(logs.handler("pubip-watchdog", cfg.log_file))
    root.setLevel(logging.DEBUG if verbose else getattr(logging, cfg.log_level.upper()))
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def arguments() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="pubip-watchdog", description="CTDB's recovery-daemon check on each host")
    ap.add_argument("--version", action="version",
                    version=f"pubip-watchdog {__version__} (protocol {protocol.VERSION})")
    ap.add_argument("--config", default=DEFAULT_PATH, help="the watchdog's YAML configuration (default: %(default)s)")
    ap.add_argument("--once", action="store_true",
                    help="run one check and exit: 0 clean (or skipped), 1 finding (a run was requested), 2 error")
    ap.add_argument("--check-config", action="store_true", help="validate the configuration and exit")
    ap.add_argument("--leave", action="store_true",
                    help="graceful shutdown (the pubip-watchdog-leave unit's ExecStop): ask the listener to move this "
                    "node's public IPs away, and wait until the others hold them (exit 0) or --timeout (exit 1)")
    ap.add_argument("--timeout", type=float, default=15.0, help="how long --leave waits")
    ap.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = arguments()
    args = ap.parse_args(argv)
    try:
        cfg = load(args.config)
    except ConfigError as exc:
        print(f"pubip-watchdog: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.check_config:
        print(f"{args.config}: valid")
        return EXIT_CLEAN
    _logging(cfg, args.verbose)
    if args.leave:
        from .leave import leave

        return EXIT_CLEAN if leave(cfg, args.timeout) else EXIT_FINDING
    if args.once:
        dog = Watchdog(cfg)
        try:
            result = dog.check()
        except (OSError, ValueError):
            return EXIT_ERROR
        if not result.findings:
            return EXIT_CLEAN
        deadline = time.monotonic() + cfg.retry_max
        while dog.requester.busy and time.monotonic() < deadline:
            time.sleep(0.02)
        return EXIT_FINDING if dog.requester.sent else EXIT_ERROR
    run_forever(Watchdog(cfg, Metrics(cfg.metrics_port, cfg.metrics_address)))
    return EXIT_CLEAN


if __name__ == "__main__":
    sys.exit(main())
