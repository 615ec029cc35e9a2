"""Secrets: shown as *** in every output (dry-run text, JSON, logs), passed unchanged to the server."""

from __future__ import annotations

import re

MASK = "***"
SECRET_FLAGS = ("--api-key", "--admin-api-key", "--hf-token", "--token")
_SECRET_NAME = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL|AUTH)", re.I)


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


def _secret_flag(arg: str) -> bool:
    flag = arg.split("=", 1)[0]
    return flag in SECRET_FLAGS or (flag.startswith("--") and is_secret_name(flag[2:].replace("-", "_")))


def redact_argv(argv: list[str]) -> list[str]:
    out, hide_next = [], False
    for arg in argv:
        if hide_next:
            out.append(MASK)
            hide_next = False
        elif arg.startswith("--") and _secret_flag(arg):
            if "=" in arg:
                out.append(arg.split("=", 1)[0] + "=" + MASK)
            else:
                out.append(arg)
                hide_next = True
        else:
            out.append(arg)
    return out


def redact_env(env: dict[str, str]) -> dict[str, str]:
    return {k: (MASK if is_secret_name(k) and v else v) for k, v in env.items()}


def secret_values(argv: list[str], env: dict[str, str]) -> set[str]:
    """The literal secret strings, so free text (reasons, log lines) can be scrubbed too."""
    vals = {a for a, r in zip(argv, redact_argv(argv)) if r == MASK}
    vals |= {a.split("=", 1)[1] for a, r in zip(argv, redact_argv(argv)) if r.endswith("=" + MASK)}
    vals |= {v for k, v in env.items() if is_secret_name(k) and v}
    return {v for v in vals if v}


def scrub(text: str, secrets: set[str]) -> str:
    for s in sorted(secrets, key=len, reverse=True):
        text = text.replace(s, MASK)
    return text
