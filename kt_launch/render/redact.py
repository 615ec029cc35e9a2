"""Secrets: shown as *** in every output (dry-run text, JSON, logs), passed unchanged to the server."""

from __future__ import annotations

import re

from kt_launch.core.secrets import is_secret_name

MASK = "***"
SECRET_FLAGS = ("--api-key", "--admin-api-key", "--hf-token", "--token")
# Free-text scrubbing (log lines, reasons) skips values too short or too common to be a real secret:
# replacing every "1" or "true" in a log would garble it and hide nothing.
MIN_SCRUB_LEN = 4
_NOT_SECRET_VALUES = {"true", "false", "none", "null", "yes", "no", "on", "off"}


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
        if len(s) >= MIN_SCRUB_LEN and s.lower() not in _NOT_SECRET_VALUES:
            text = text.replace(s, MASK)
    return text


def scrub_bytes(data: bytes, secrets: set[str]) -> bytes:
    """scrub() for raw output (a child's log), whatever its encoding."""
    for s in sorted(secrets, key=len, reverse=True):
        if len(s) >= MIN_SCRUB_LEN and s.lower() not in _NOT_SECRET_VALUES:
            data = data.replace(s.encode("utf-8", "surrogateescape"), MASK.encode())
    return data


def scrub_findings(findings, secrets: set[str]) -> list:
    """Findings with secret values masked in their message and fix."""
    from dataclasses import replace

    return [replace(f, message=scrub(f.message, secrets), fix=scrub(f.fix, secrets)) for f in findings]


def safe_findings(cmd, findings) -> list:
    """The findings of a plan with every secret of its command masked (for text output and logs)."""
    return scrub_findings(findings, secret_values(cmd.argv, cmd.env))
