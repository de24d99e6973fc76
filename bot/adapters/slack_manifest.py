"""The Slack app manifest, generated from the router's command registry."""

from __future__ import annotations

from typing import Any

from bot.messages import t
from bot.router import Router
from bot.settings import Settings

BOT_EVENTS = ["app_mention", "message.channels", "message.groups", "message.im", "message.mpim"]


def manifest(router: Router, settings: Settings, socket_mode: bool) -> dict[str, Any]:
    """A manifest to paste at api.slack.com/apps (Create New App -> From an app manifest)."""
    slack = settings.slack
    base = (settings.server.public_url or "https://YOUR-PUBLIC-HOST").rstrip("/")
    request_url = None if socket_mode else f"{base}{slack.events_path}"
    commands = []
    for cmd in sorted(router.commands.values(), key=lambda c: c.name):
        entry: dict[str, Any] = {
            "command": f"/{cmd.name}",
            "description": t(cmd.description, "en")[:100],
            "should_escape": False,
        }
        hint = cmd.usage().removeprefix(f"/{cmd.name}").strip()
        if hint:
            entry["usage_hint"] = hint[:100]
        if request_url:
            entry["url"] = request_url
        commands.append(entry)
    settings_block: dict[str, Any] = {
        "event_subscriptions": {"bot_events": BOT_EVENTS},
        "interactivity": {"is_enabled": True},
        "org_deploy_enabled": False,
        "socket_mode_enabled": socket_mode,
        "token_rotation_enabled": False,
    }
    if request_url:
        settings_block["event_subscriptions"]["request_url"] = request_url
        settings_block["interactivity"]["request_url"] = request_url
    result: dict[str, Any] = {
        "display_information": {"name": slack.app_name, "description": "AI assistant for the team",
                                "background_color": "#4f46e5"},
        "features": {
            "app_home": {"home_tab_enabled": False, "messages_tab_enabled": True,
                         "messages_tab_read_only_enabled": False},
            "bot_user": {"display_name": slack.app_name, "always_online": True},
            "slash_commands": commands,
        },
        "oauth_config": {"scopes": {"bot": list(slack.scopes)}},
        "settings": settings_block,
    }
    if not socket_mode and slack.client_id:
        result["oauth_config"]["redirect_urls"] = [f"{base}/slack/oauth_redirect"]
    return result
