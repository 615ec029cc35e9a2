"""THE secrets rule: which names and values hold secrets, and the free-text scrub every output uses (through
render/redact.py, which adds argv and environments; the crash file calls it here, without the registry):
error messages (facts), dry-run text and JSON, findings and their fields, the supervisors' logs, the crash file.

The rule (the README's secrets paragraph says the same): split the name into words on anything but
letters and digits, case-insensitively. The name is secret when one word
- ends with TOKEN, SECRET(S), PASSWORD, PASSWD, APIKEY, ACCESSKEY, PRIVATEKEY or CREDENTIAL(S)
  (HF_TOKEN, GITHUBTOKEN, OPENAIAPIKEY, AWS_SECRET_ACCESS_KEY, DB_PASSWORD), or
- is KEY, PASS, PAT, AUTH, AUTHORIZATION, BEARER or COOKIE (OPENAI_API_KEY, GITHUB_PAT, GH_PAT), or
- is PWD after another word (MYSQL_PWD, DB_PWD).
Not secret: words that merely start with one (TOKENIZERS_PARALLELISM, KEYBOARD, AUTHOR, PATH, PATCH),
plural TOKENS (a count: max_total_tokens), and the shell's working directory `PWD` / `OLDPWD`.

A value is worth masking in free text (a log line, a traceback) when it is at least MIN_SCRUB_LEN characters and
not a common word: replacing every "1" or "true" in a log would garble it and hide nothing.
"""

from __future__ import annotations

import re

_SECRET_WORD_ENDS = ("TOKEN", "SECRET", "SECRETS", "PASSWORD", "PASSWD", "APIKEY", "ACCESSKEY",
                     "PRIVATEKEY", "CREDENTIAL", "CREDENTIALS")
_SECRET_WORDS = frozenset({"KEY", "PASS", "PAT", "AUTH", "AUTHORIZATION", "BEARER", "COOKIE"})
_SECRET_AFTER_A_WORD = frozenset({"PWD"})  # MYSQL_PWD is a password; PWD alone is the working directory
_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+")

MASK = "***"
MIN_SCRUB_LEN = 4
_NOT_SECRET_VALUES = frozenset({"true", "false", "none", "null", "yes", "no", "on", "off"})


def is_secret_name(name: str) -> bool:
    words = [w.upper() for w in _WORD_SPLIT.split(name) if w]
    return any(w in _SECRET_WORDS or w.endswith(_SECRET_WORD_ENDS) or (i > 0 and w in _SECRET_AFTER_A_WORD)
               for i, w in enumerate(words))


def worth_masking(value: str) -> bool:
    """Whether free text should have this secret value masked (see the module docstring)."""
    return len(value) >= MIN_SCRUB_LEN and value.lower() not in _NOT_SECRET_VALUES


def env_secret_values(env) -> set[str]:
    """The values of an environment's secret-named variables (HF_TOKEN=...), for scrubbing free text."""
    return {v for k, v in env.items() if v and is_secret_name(k)}


# A message may hold a secret cut short by someone's [:80]: a run of at least this many of a secret's first
# characters is masked too, so a long key never shows its beginning.
PREFIX_LEN = 12


def _scrubbable(secrets: set[str]) -> list[str]:
    return sorted((s for s in secrets if worth_masking(s)), key=len, reverse=True)


def _scrub(data, secrets: list, mask, cut_copies: bool = True):
    for s in secrets:
        data = data.replace(s, mask)
        if cut_copies and len(s) > PREFIX_LEN:  # cut-off copies: mask the longest run of s's first characters at each hit
            head, start = s[:PREFIX_LEN], 0
            while (i := data.find(head, start)) >= 0:
                n = PREFIX_LEN
                while i + n < len(data) and n < len(s) and data[i + n:i + n + 1] == s[n:n + 1]:
                    n += 1
                data = data[:i] + mask + data[i + n:]
                start = i + len(mask)
    return data


def scrub(text: str, secrets: set[str]) -> str:
    """Free text with each secret value (and a cut-off copy of a long one) masked."""
    return _scrub(text, _scrubbable(secrets), MASK)


def scrub_bytes(data: bytes, secrets: set[str], cut_copies: bool = True) -> bytes:
    """scrub() for raw output (a child's log), whatever its encoding. cut_copies=False masks only whole
    secrets (for a piece of a stream, whose end may hold the start of a secret that the next piece ends)."""
    return _scrub(data, [s.encode("utf-8", "surrogateescape") for s in _scrubbable(secrets)], MASK.encode(),
                  cut_copies)


def longest_secret(secrets: set[str]) -> int:
    """Bytes of the longest secret scrub masks (0 when none)."""
    return max((len(s.encode("utf-8", "surrogateescape")) for s in _scrubbable(secrets)), default=0)
