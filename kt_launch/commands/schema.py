"""`kt-launch schema`: the JSON Schema of profiles (stdout or --output FILE), of `--supervise --json`'s events
(--events), the resolver's step graph (--steps),
or the generated blocks of a README regenerated from the registry and the steps (--readme FILE)."""

from __future__ import annotations

import sys

from kt_launch.commands.common import EXIT_OK
from kt_launch.core.errors import ConfigError


def run(args, passthrough) -> int:
    from kt_launch.render.schema import profile_schema_text

    if getattr(args, "readme", None):
        return _regenerate_readme(args.readme)
    if getattr(args, "steps", False):
        from kt_launch.render.docs import steps_table
        from kt_launch.resolve.pipeline import STEPS

        sys.stdout.write(steps_table(STEPS) + "\n")
        return EXIT_OK
    if getattr(args, "events", False):
        from kt_launch.render.events import events_schema_text

        text = events_schema_text()
    else:
        text = profile_schema_text()
    if getattr(args, "output", None):
        from kt_launch.facts.cache import write_output

        try:
            write_output(args.output, text)  # the old file stays whole unless the new one is written whole
        except OSError as e:
            raise ConfigError(f"--output {args.output}: cannot write ({e.strerror or e}); the file was not "
                              "changed") from None
        return EXIT_OK
    sys.stdout.write(text)
    return EXIT_OK


def _regenerate_readme(path: str) -> int:
    from kt_launch.facts.cache import write_output
    from kt_launch.facts.reader import Kind, ReadError, read_bytes
    from kt_launch.render.docs import with_table
    from kt_launch.resolve.pipeline import STEPS

    try:
        text = with_table(read_bytes(path, Kind("README", 4 << 20)).decode("utf-8", "replace"), STEPS)
        if text is None:
            raise ConfigError(f"--readme {path}: no generated-block markers (profile-keys, steps) in the file")
        write_output(path, text)
    except ReadError as e:
        raise ConfigError(str(e)) from None
    except OSError as e:
        raise ConfigError(f"--readme {path}: cannot write ({e.strerror or e}); the file was not changed") from None
    return EXIT_OK
