"""Files kept on disk by content hash, with a database row per upload or generated file."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from sqlalchemy import insert, select

from storage.models import Blob
from storage.repositories.base import Repository, Sessions

BlobKind = Literal["upload", "generated"]


@dataclass(frozen=True)
class BlobRow:
    id: int
    workspace_pk: int | None
    sha256: str
    name: str
    mime: str
    size: int
    kind: str
    created_at: datetime


def _write_once(target: Path, data: bytes) -> None:
    """Write `data` to `target` unless identical content is already there; atomic via rename."""
    if target.exists() and target.stat().st_size == len(data):
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
    try:
        partial.write_bytes(data)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


class BlobRepository(Repository):
    """Stores bytes under `blob_dir/<sha[:2]>/<sha>` once per distinct content; rows point at them."""

    def __init__(self, sessions: Sessions, blob_dir: Path) -> None:
        super().__init__(sessions)
        self.blob_dir = blob_dir

    def _relative(self, sha256: str) -> Path:
        return Path(sha256[:2]) / sha256

    def path(self, blob: BlobRow) -> Path:
        """Where the blob's bytes live on disk."""
        return self.blob_dir / self._relative(blob.sha256)

    async def put(
        self, workspace_pk: int | None, name: str, mime: str, data: bytes, kind: BlobKind = "upload"
    ) -> BlobRow:
        if kind not in ("upload", "generated"):
            raise ValueError(f"blob kind must be 'upload' or 'generated', not {kind!r}")
        sha256 = hashlib.sha256(data).hexdigest()
        relative = self._relative(sha256)
        await asyncio.to_thread(_write_once, self.blob_dir / relative, data)
        stmt = (
            insert(Blob)
            .values(
                workspace_id=workspace_pk,
                sha256=sha256,
                name=name,
                mime=mime,
                size=len(data),
                kind=kind,
                path=relative.as_posix(),
            )
            .returning(Blob)
        )
        async with self._sessions.begin() as session:
            return _row((await session.execute(stmt)).scalar_one())

    async def get(self, blob_id: int) -> BlobRow | None:
        async with self._sessions() as session:
            blob = (await session.execute(select(Blob).where(Blob.id == blob_id))).scalar_one_or_none()
        return None if blob is None else _row(blob)

    async def by_sha(self, sha256: str) -> BlobRow | None:
        """The newest row for this content hash (several rows may share one file)."""
        stmt = select(Blob).where(Blob.sha256 == sha256).order_by(Blob.id.desc()).limit(1)
        async with self._sessions() as session:
            blob = (await session.execute(stmt)).scalar_one_or_none()
        return None if blob is None else _row(blob)

    async def read(self, blob_id: int) -> bytes:
        """The blob's bytes; `LookupError` if there is no such blob."""
        blob = await self.get(blob_id)
        if blob is None:
            raise LookupError(f"no blob with id {blob_id}")
        return await asyncio.to_thread(self.path(blob).read_bytes)


def _row(b: Blob) -> BlobRow:
    return BlobRow(
        id=b.id,
        workspace_pk=b.workspace_id,
        sha256=b.sha256,
        name=b.name,
        mime=b.mime,
        size=b.size,
        kind=b.kind,
        created_at=b.created_at,
    )
