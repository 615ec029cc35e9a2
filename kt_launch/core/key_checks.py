"""Checks of single profile keys beyond their type, named by the key's row in the option registry
(core/options.py `Option.checks`) and run by the profile model (core/profile.py), whose messages name the key.
Each takes the value after its type was checked and returns it, or raises ValueError with what to write instead."""

from __future__ import annotations

from typing import Any


def gpu_ids(v: Any) -> Any:
    """runtime.cuda_visible_devices: not empty (CUDA would then hide every GPU, which no one means by ""), and
    no GPU twice (`0,0,1` gives one replica the same GPU as two tensor-parallel ranks)."""
    if not isinstance(v, str):
        return v
    if not v.strip():
        raise ValueError('is empty; give GPU indices or UUIDs (0,1), "-1" for no GPU, or null for every GPU')
    items = [x.strip() for x in v.split(",")]
    if "" in items:
        raise ValueError(f"{v!r} has an empty item; give GPU indices or UUIDs separated by commas (0,1)")
    seen: set[str] = set()
    for x in items:
        if x in seen:
            raise ValueError(f"{v!r} names GPU {x} twice; each GPU once (0,1)")
        seen.add(x)
    return v


def fleet_hosts(hosts: Any) -> Any:
    """fleet.hosts: each name once (each host is told its own part by name), and each address one the router can
    dial on another machine: no wildcard (0.0.0.0), no loopback (the router's own host), and no address twice."""
    from kt_launch.core.addresses import remote_address_problem

    names: set[str] = set()
    addresses: dict[str, str] = {}
    from kt_launch.core.fleet import LOCAL

    for i, h in enumerate(hosts or ()):
        if h.name.strip().lower() == LOCAL:
            raise ValueError(f"[{i}].name {h.name!r} is how kt-launch names the router's own host; name it otherwise")
        if h.name in names:
            raise ValueError(f"[{i}].name {h.name!r} appears twice; give each host its own name")
        names.add(h.name)
        problem = remote_address_problem(h.address)
        if problem:
            raise ValueError(f"[{i}] ({h.name}).address {h.address!r}: {problem}")
        key = h.address.strip().lower()
        if key in addresses:
            raise ValueError(f"[{i}] ({h.name}).address {h.address!r} is also the address of {addresses[key]}; "
                             "each host has its own")
        addresses[key] = h.name
    return hosts


def distinct(v: Any) -> Any:
    """kt.numa_nodes: each node once (`[0, 0]` would put two thread pools on node 0 and leave the others idle)."""
    seen: set[Any] = set()
    for x in v or ():
        if x in seen:
            raise ValueError(f"{list(v)} names node {x} twice; one thread pool per node, each node once")
        seen.add(x)
    return v
