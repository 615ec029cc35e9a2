"""Shared types every layer may use: findings, plan, provenance, profile schema, fact dataclasses. No I/O."""
