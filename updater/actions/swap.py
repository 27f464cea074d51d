"""The swap helper of a self-update (`updater swap ENTRY`): a short-lived container of the new
image, started by an updater that publishes host ports. The engine will not start the
successor while the old updater holds those ports, so the helper stops the old one first,
starts the successor, and waits for it to take over (it finishes the journal entry). If it
does not — it exits, or takes too long — the helper removes it, gives the old updater its name
back and starts it again; the old updater's recovery then closes the entry as rolled back.
So the host is never left without an updater: one of the two always runs at the end.

Also here: how the helper is built (`swap_helper`), which addresses force a self-update through
it (`pinned_addresses`), and the timeouts the two updaters and the helper agree on.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from updater.core import policy
from updater.core.ports import ContainerEngine
from updater.engine import recreate
from updater.errors import EngineError, UpdaterError
from updater.store.journal import Journal, Step

log = logging.getLogger(__name__)
POLL_SECONDS = 0.5
SWAP_SUFFIX = "-updater-swap"  # the helper of a self-update whose ports must be let go first
SWAP_OF = "updater.swap-of"  # its label: the name of the updater it swaps
SWAP_MARGIN = 60.0
LOCK_TAKE_BACK = 30.0


def swap(engine: ContainerEngine, journal: Journal, entry_id: int, health_timeout: float,
         clock: Callable[[], float] = time.monotonic,
         sleep: Callable[[float], None] = time.sleep) -> int:
    """Carry out the hand-over journalled as `entry_id`; 0 when the successor took over, 1
    when the old updater was put back."""
    entry = journal.get(entry_id)
    if entry is None or entry.step != Step.HANDING_OVER or not entry.new_id:
        raise UpdaterError(f"no self-update waiting for a swap as journal entry {entry_id}")
    old = engine.inspect_container(entry.old_id)
    if old is None:
        raise UpdaterError(f"the updater container {entry.old_id[:12]} to swap is gone")
    log.info("%s: stopping the old updater %s", entry.name, entry.old_id[:12])
    engine.stop(entry.old_id, own_stop_timeout(old))
    try:
        log.info("%s: starting the successor %s", entry.name, entry.new_id[:12])
        engine.start(entry.new_id)
        problem = _await_take_over(engine, journal, entry_id, entry.new_id,
                                   health_timeout + LOCK_TAKE_BACK + SWAP_MARGIN, clock, sleep)
    except EngineError as exc:
        problem = str(exc)
    if problem is None:
        log.info("%s: the successor took over", entry.name)
        return 0
    log.error("%s: the successor %s; putting the old updater back", entry.name, problem)
    engine.remove(entry.new_id, force=True)
    if (engine.inspect_container(entry.name) or {}).get("Id") != entry.old_id:
        engine.rename(entry.old_id, entry.name)
    engine.start(entry.old_id)  # its recovery closes the entry (rolled back)
    return 1


def _await_take_over(engine: ContainerEngine, journal: Journal, entry_id: int, new_id: str,
                     timeout: float, clock: Callable[[], float],
                     sleep: Callable[[float], None]) -> str | None:
    """None once the successor finished the entry; else what went wrong."""
    deadline = clock() + timeout
    while True:
        entry = journal.get(entry_id)
        if entry is None or entry.step == Step.FINISHED:
            return None
        state = (engine.inspect_container(new_id) or {}).get("State") or {}
        if not state.get("Running") or state.get("Restarting"):
            return f"stopped with exit code {state.get('ExitCode')} before it took over"
        if clock() >= deadline:
            return f"did not take over within {timeout:g}s"
        sleep(POLL_SECONDS)


def pinned_addresses(plan: recreate.CreatePlan) -> list[str]:
    """The MAC addresses and static IP addresses the replacement is created with (or
    connected with before its first start), as "mac X" / "address Y on N"."""
    pinned = [f"mac {plan.body['MacAddress']}"] if plan.body.get("MacAddress") else []
    endpoints = dict((plan.body.get("NetworkingConfig") or {}).get("EndpointsConfig") or {})
    for network, endpoint in {**endpoints, **plan.extra_networks}.items():
        if endpoint.get("MacAddress"):
            pinned.append(f"mac {endpoint['MacAddress']} on {network}")
        ipam = endpoint.get("IPAMConfig") or {}
        pinned += [f"address {ipam[key]} on {network}"
                   for key in ("IPv4Address", "IPv6Address") if ipam.get(key)]
    return pinned


def swap_helper(plan: recreate.CreatePlan, entry: int, name: str) -> dict[str, Any]:
    """The create body of the swap helper: the successor's image, mounts, environment and
    networks (the engine's socket and the state volume among them), running `updater swap
    ENTRY`, with no ports, no restart, no health check, removed when it ends, unwatched.

    Of the networks only the primary one, with no MAC and no static address: it runs beside
    this container, which holds the MACs and the static addresses (the helper talks to the
    engine through the socket it mounts; the network is there for an engine reached by TCP)."""
    body = copy.deepcopy(plan.body)
    host = body.setdefault("HostConfig", {})
    host.update(PortBindings={}, PublishAllPorts=False, RestartPolicy={"Name": "no"},
                AutoRemove=True)
    body.update(Cmd=["swap", str(entry)], Labels={SWAP_OF: name}, ExposedPorts=None,
                Healthcheck={"Test": ["NONE"]})
    body.pop("MacAddress", None)
    endpoints = (body.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}
    if plan.primary_network in endpoints:
        primary = endpoints[plan.primary_network]
        for key in ("MacAddress", "IPAMConfig"):
            primary.pop(key, None)
        body["NetworkingConfig"] = {"EndpointsConfig": {plan.primary_network: primary}}
    return body


def own_stop_timeout(inspect: Mapping[str, Any]) -> float:
    """How long the engine gives a running container to stop: its own `--stop-timeout`."""
    return stop_timeout_in(inspect.get("Config") or {})


def stop_timeout_in(config: Mapping[str, Any]) -> float:
    """The stop timeout a container config (inspect's `Config`, or a create body) sets, else
    the engine's default."""
    own = config.get("StopTimeout")
    return float(own) if own is not None else policy.DEFAULT_STOP_TIMEOUT
