"""Slack's OAuth install flow for many workspaces: installations kept in PostgreSQL, sealed.

Bot tokens are encrypted (Fernet, with a key derived from SLACK_CLIENT_SECRET) before they reach
the database, so a database dump holds no usable token.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
from datetime import datetime, timedelta
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from slack_sdk.oauth.installation_store import Bot, Installation
from slack_sdk.oauth.installation_store.async_installation_store import AsyncInstallationStore
from slack_sdk.oauth.state_store.async_state_store import AsyncOAuthStateStore

from storage.repositories.installations import InstallationRepository

log = logging.getLogger(__name__)
PLATFORM = "slack"
STATE_TTL = timedelta(minutes=10)


class TokenSeal:
    """Encrypts installation records with a key derived from a secret that lives only in the environment."""

    def __init__(self, secret: str) -> None:
        key = hashlib.sha256(b"teambot-installation-seal:" + secret.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(key))

    def seal(self, data: dict[str, Any]) -> str:
        return self._fernet.encrypt(json.dumps(data, default=_json_default).encode()).decode()

    def open(self, sealed: str) -> dict[str, Any]:
        try:
            value: dict[str, Any] = json.loads(self._fernet.decrypt(sealed.encode()))
        except InvalidToken as e:
            raise ValueError("the installation was sealed with another secret") from e
        return value


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.timestamp()
    raise TypeError(f"cannot store {type(value).__name__}")


class PgInstallationStore(AsyncInstallationStore):
    """slack_sdk's installation store over the `installation` table (one row per workspace)."""

    def __init__(self, repository: InstallationRepository, seal: TokenSeal) -> None:
        self.repository = repository
        self.seal = seal

    @property
    def logger(self) -> logging.Logger:
        return log

    async def async_save(self, installation: Installation) -> None:
        data = installation.to_dict_for_copying()
        await self.repository.save(PLATFORM, installation.enterprise_id, installation.team_id or "",
                                   self.seal.seal(data))
        log.info("Slack app installed in team %s", installation.team_id)

    async def async_save_bot(self, bot: Bot) -> None:
        return None  # the whole installation is saved by async_save

    async def async_find_installation(
        self, *, enterprise_id: str | None, team_id: str | None, user_id: str | None = None,
        is_enterprise_install: bool | None = False,
    ) -> Installation | None:
        sealed = await self.repository.find(PLATFORM, enterprise_id, team_id)
        if sealed is None:
            return None
        try:
            return Installation(**self.seal.open(sealed))
        except ValueError:
            log.error("the Slack installation of team %s cannot be opened (SLACK_CLIENT_SECRET changed?)", team_id)
            return None

    async def async_find_bot(
        self, *, enterprise_id: str | None, team_id: str | None, is_enterprise_install: bool | None = False,
    ) -> Bot | None:
        installation = await self.async_find_installation(enterprise_id=enterprise_id, team_id=team_id)
        return installation.to_bot() if installation is not None else None

    async def async_delete_bot(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        await self.repository.delete(PLATFORM, enterprise_id, team_id)

    async def async_delete_installation(
        self, *, enterprise_id: str | None, team_id: str | None, user_id: str | None = None
    ) -> None:
        await self.repository.delete(PLATFORM, enterprise_id, team_id)


class PgStateStore(AsyncOAuthStateStore):
    """One-time OAuth `state` values, in PostgreSQL so any server instance can finish the flow."""

    def __init__(self, repository: InstallationRepository) -> None:
        self.repository = repository

    @property
    def logger(self) -> logging.Logger:
        return log

    async def async_issue(self, *args: Any, **kwargs: Any) -> str:
        state = secrets.token_urlsafe(24)
        await self.repository.issue_state(state, STATE_TTL)
        return state

    async def async_consume(self, state: str) -> bool:
        return await self.repository.consume_state(state)

