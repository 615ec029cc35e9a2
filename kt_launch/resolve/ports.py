"""The one verdict on a port this machine would listen on, from what a bind there found now
(facts/artifacts.probe_port's status): why a server could not listen there and what to do, or None.

The plan (KT-E232, one instance), the fleet (KT-E708, each listener it starts here) and the supervisor (before the
first start and before every restart) each name their own subject (`server.port=...`, `numa0: port ...`,
`127.0.0.1:30000`) and take the reason and the fix from here, so a taken port reads the same everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PortVerdict:
    why: str  # follows the subject: "<subject> <why>"
    fix: str
    effect: str  # what it does to a server started there anyway (the supervisor says it before it refuses)


_VERDICTS = {
    "in-use": PortVerdict("is already in use (another server?)",
                          "pick a free port (--set server.port=...), or stop what listens there (ss -ltnp)",
                          "SGLang could not listen there, and /health would be answered by the other server"),
    "no-permission": PortVerdict("needs privileges to listen on (ports below 1024)", "pick a port above 1023",
                                 "SGLang could not listen there"),
}


def port_verdict(status: str | None) -> PortVerdict | None:
    """None where a server could listen (free), or where this machine cannot tell (not local, unresolvable)."""
    return _VERDICTS.get(status or "")
