"""kt-launch: resolve, check and launch SGLang with the kt-kernel CPU-expert backend."""

__version__ = "0.1.0"
