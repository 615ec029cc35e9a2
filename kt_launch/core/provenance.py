"""Where each profile value came from: the source (profile file, env var, --set) that won for a key."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Origin:
    source: str  # "profile" | "env" | "cli"
    where: str  # file path, env var name or "--set key=value"


@dataclass
class Provenance:
    """Dotted key -> the source that supplied the winning value."""

    origins: dict[str, Origin] = field(default_factory=dict)

    def of(self, key: str) -> Origin | None:
        """The origin of `key` or of the closest enclosing key that was set as a whole."""
        parts = key.split(".")
        for i in range(len(parts), 0, -1):
            o = self.origins.get(".".join(parts[:i]))
            if o is not None:
                return o
        # A mapping value (e.g. runtime.env) set key by key: the highest-precedence source among its keys.
        inner = [o for k, o in self.origins.items() if k.startswith(key + ".")]
        rank = {"profile": 0, "env": 1, "cli": 2}
        return max(inner, key=lambda o: rank[o.source]) if inner else None
