"""Suite-wide settings. In CI (CI=true) Hypothesis runs derandomized: the same few thousand examples
every run, so a landing is never decided by a lucky draw; locally every run explores new inputs."""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
    settings.load_profile("ci")
