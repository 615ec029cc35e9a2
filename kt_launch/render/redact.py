"""The one redactor: secrets shown as *** in every output (dry-run text, JSON, logs, findings and their fields,
the crash file, the supervisors' logs), passed unchanged to the server. Which names and values are secret is
core/secrets.py's rule; this module applies it to argv, environments and free text."""

from __future__ import annotations

import re

import json

from kt_launch.core.options import BY_KEY, OPTIONS
# The rule and the free-text scrub are core/secrets.py's (the crash file uses them without the registry);
# they are imported here too, so every output finds the one redactor in one place.
from kt_launch.core.secrets import (MASK, PREFIX_LEN, env_secret_values, is_secret_name, longest_secret, scrub,
                                    scrub_bytes)

SECRET_FLAGS = ("--api-key", "--admin-api-key", "--hf-token", "--token")


# Flags the registry renders are secret exactly when their key is declared so (--kt-max-deferred-experts-per-token
# is a count); any other flag (passed through after `--` or in server.extra_args) is judged by its name.
_DECLARED = {n: o.secret for o in OPTIONS for r in o.render.values() for n in getattr(r, "names", ())}
_NUMBER = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$")


_ALWAYS = tuple(sorted({*SECRET_FLAGS, *(n for n, secret in _DECLARED.items() if secret)}))
_MIN_ABBREV = 4  # `--ap`: argparse expands any unambiguous prefix of a long flag (allow_abbrev)


def _secret_flag(flag: str) -> str | None:
    """"always" (a declared secret flag, or a prefix argparse would expand to one: `--api-k`), "named" (its
    name looks secret), or None."""
    if flag in SECRET_FLAGS or _DECLARED.get(flag):
        return "always"
    if flag in _DECLARED or not flag.startswith("--"):
        return None
    if len(flag) >= _MIN_ABBREV and any(s.startswith(flag) for s in _ALWAYS):
        return "always"
    return "named" if is_secret_name(flag[2:]) else None


def _masks(how: str | None, value: str) -> bool:
    # A number is never masked for its flag's name: --max-prefill-tokens-per-step 8 is a count, not a key.
    return how == "always" or (how == "named" and not _NUMBER.match(value))


def redact_argv(argv: list[str]) -> list[str]:
    """argv with every secret value masked, in `--flag value` and `--flag=value` form alike. After a secret
    flag, an item that starts with `--` is the next flag (argparse reads it so), not a value to hide."""
    out: list[str] = []
    pending: str | None = None  # how the previous item, a flag without `=`, is secret
    for arg in argv:
        if pending is not None and not arg.startswith("--"):
            out.append(MASK if _masks(pending, arg) else arg)
            pending = None
            continue
        pending = None
        flag, eq, value = arg.partition("=")
        how = _secret_flag(flag) if arg.startswith("--") else None
        if eq:
            out.append(flag + "=" + MASK if _masks(how, value) else arg)
        else:
            out.append(arg)
            pending = how
    return out


def redact_env(env: dict[str, str]) -> dict[str, str]:
    return {k: (MASK if is_secret_name(k) and v else v) for k, v in env.items()}


def secret_values(argv: list[str], env: dict[str, str]) -> set[str]:
    """The literal secret strings, so free text (reasons, log lines) can be scrubbed too."""
    vals = {a for a, r in zip(argv, redact_argv(argv)) if r == MASK}
    vals |= {a.split("=", 1)[1] for a, r in zip(argv, redact_argv(argv)) if r.endswith("=" + MASK)}
    vals |= env_secret_values(env)
    return {v for v in vals if v}


def scrub_findings(findings, secrets: set[str]) -> list:
    """Findings with secret values masked in their message, fix and fields."""
    from dataclasses import replace

    return [replace(f, message=scrub(f.message, secrets), fix=scrub(f.fix, secrets),
                    fields=tuple((k, scrub(v, secrets)) for k, v in f.fields)) for f in findings]


def safe_findings(cmd, findings) -> list:
    """The findings of a plan with every secret of its command masked (for text output and logs)."""
    return scrub_findings(findings, secret_values(cmd.argv, cmd.env))


# -- kt-launch's own argv (the command printed for another fleet host) ------------------------------------

def _secret_key(key: str) -> bool:
    """Whether a profile key (as written after --set, any case) holds a secret: a declared key says so
    itself (kt.max_deferred_experts_per_token is a count); any other key (runtime.env.HF_TOKEN, a nested
    or unknown key) is secret when one of its dotted parts has a secret name."""
    k = key.strip().lower()
    o = BY_KEY.get(k)
    if o is not None:
        return o.secret
    return any(is_secret_name(part) for part in key.strip().split("."))


def _mask_tree(prefix: str, value):
    """A --set value given as a whole section or map ({"api_key": ...}) with every secret leaf masked."""
    if isinstance(value, dict):
        return {k: (MASK if _secret_key(f"{prefix}.{k}") else _mask_tree(f"{prefix}.{k}", v))
                for k, v in value.items()}
    return value


def _redact_set(item: str, secrets: set[str]) -> str:
    key, eq, value = item.partition("=")
    if not eq:
        return scrub(item, secrets)
    if _secret_key(key):
        return f"{key}={MASK}"
    if value.strip()[:1] == "{":
        try:
            doc = json.loads(value)
        except (ValueError, RecursionError):
            doc = None
        if isinstance(doc, dict):
            value = json.dumps(_mask_tree(key.strip(), doc))
    return f"{key}={scrub(value, secrets)}"


def redact_launcher_argv(argv: list[str] | tuple[str, ...], secrets: set[str]) -> tuple[str, ...]:
    """A kt-launch command line (`--set KEY=VALUE ... -- PASS-THROUGH`) with every secret masked: by key
    (any case, inside a section given as JSON), by flag in the pass-through part (abbreviations included),
    and by value: `secrets` are the values the plan knows (its commands' secret flags and env)."""
    argv = list(argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    own, passthrough = argv[:cut], argv[cut + 1:]
    out: list[str] = []
    for i, item in enumerate(own):
        out.append(_redact_set(item, secrets) if i > 0 and own[i - 1] == "--set" else scrub(item, secrets))
    if cut < len(argv):
        out += ["--", *(scrub(a, secrets) for a in redact_argv(passthrough))]
    return tuple(out)
