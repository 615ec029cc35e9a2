"""The one exception for invalid user input, kept free of heavy imports so the CLI starts fast."""


class ConfigError(ValueError):
    """Invalid profile, value or usage: exit code 2. The message names the key path and where it came from."""
