"""PostgreSQL storage: the `Store`, its repositories and their row types."""

from __future__ import annotations

from storage.db import Store, asyncpg_url
from storage.repositories import (
    AuditRow,
    BlobKind,
    BlobRow,
    Identity,
    JobRow,
    MessageRow,
    Role,
    Scope,
    UsageTotals,
)

__all__ = [
    "AuditRow",
    "BlobKind",
    "BlobRow",
    "Identity",
    "JobRow",
    "MessageRow",
    "Role",
    "Scope",
    "Store",
    "UsageTotals",
    "asyncpg_url",
]
