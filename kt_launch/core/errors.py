"""The one exception for invalid user input, kept free of heavy imports so the CLI starts fast."""


class ConfigError(ValueError):
    """Invalid profile, value or usage: exit code 2. The message names the key path and where it came from."""


class Stopped(BaseException):
    """kt-launch was asked to stop by a signal (SIGTERM, SIGHUP): raised where it runs, so the `finally` blocks
    that own child processes stop them, then the command exits with 128 + the signal's number. A BaseException,
    like KeyboardInterrupt: no `except Exception` swallows it."""

    def __init__(self, signum: int, name: str):
        super().__init__(name)
        self.signum, self.name = signum, name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
