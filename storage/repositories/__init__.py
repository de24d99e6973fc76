"""Repositories over the Store's sessions, one module per area; rows come back as frozen dataclasses."""

from __future__ import annotations

from storage.repositories.audit import AuditRepository, AuditRow
from storage.repositories.blobs import BlobKind, BlobRepository, BlobRow
from storage.repositories.conversations import ConversationRepository
from storage.repositories.documents import ChunkHit, ChunkIn, DocumentRepository, DocumentRow
from storage.repositories.events import EventRepository
from storage.repositories.identity import Identity, IdentityRepository, Role
from storage.repositories.images import ImageHit, ImageRepository, ImageRow
from storage.repositories.installations import InstallationRepository
from storage.repositories.jobs import JobRepository, JobRow
from storage.repositories.memory import FactRow, MemoryRepository, Summary
from storage.repositories.message_vectors import MessageHit, MessageVector, MessageVectorRepository
from storage.repositories.messages import MessageRepository, MessageRow
from storage.repositories.scoped import Scope, ScopedSettingRepository
from storage.repositories.state import StateRepository
from storage.repositories.usage import UsageRepository, UsageTotals

__all__ = [
    "AuditRepository",
    "AuditRow",
    "BlobKind",
    "BlobRepository",
    "BlobRow",
    "ChunkHit",
    "ChunkIn",
    "ConversationRepository",
    "DocumentRepository",
    "DocumentRow",
    "EventRepository",
    "FactRow",
    "Identity",
    "IdentityRepository",
    "ImageHit",
    "ImageRepository",
    "ImageRow",
    "InstallationRepository",
    "JobRepository",
    "JobRow",
    "MemoryRepository",
    "MessageHit",
    "MessageRepository",
    "MessageRow",
    "MessageVector",
    "MessageVectorRepository",
    "Role",
    "Scope",
    "ScopedSettingRepository",
    "StateRepository",
    "Summary",
    "UsageRepository",
    "UsageTotals",
]
