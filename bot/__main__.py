"""`python -m bot [serve|migrate|doctor]`."""

from __future__ import annotations

import argparse
import asyncio
import sys

from bot.settings import ConfigError, Settings, load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot", description="Team chat AI bot server")
    parser.add_argument("--config", help="path to bot.toml (default: $BOT_CONFIG or ./bot.toml)")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="start the server (default)")
    sub.add_parser("migrate", help="create or upgrade the database schema and exit")
    sub.add_parser("doctor", help="check the configuration and say how to fix what is missing")
    manifest_cmd = sub.add_parser("slack-manifest", help="print the Slack app manifest (JSON) for this configuration")
    manifest_cmd.add_argument("--http", action="store_true", help="HTTP mode (request URLs) instead of Socket Mode")
    invite = sub.add_parser("discord-invite", help="print the URL that adds the Discord bot to a server")
    invite.add_argument("--application-id", type=int, help="default: [discord] application_id")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as e:
        print(f"configuration error: {e}", file=sys.stderr)
        return 2
    command = args.command or "serve"
    if command == "discord-invite":
        from bot.adapters.discord import invite_url

        app_id = args.application_id or settings.discord.application_id
        if app_id is None:
            print("set [discord] application_id (Developer Portal -> General Information -> Application ID) "
                  "or pass --application-id", file=sys.stderr)
            return 2
        print(invite_url(app_id, settings.discord.permissions))
        return 0
    if command == "slack-manifest":
        import json

        from bot.adapters.slack_manifest import manifest
        from handlers import build_router

        print(json.dumps(manifest(build_router(), settings, socket_mode=not args.http), indent=2))
        return 0
    from bot.logs import setup_logging

    setup_logging(settings.log_level, settings.log_format,
                  [s.get_secret_value() for s in settings.secrets.model_dump().values() if s is not None])
    if command == "serve":
        from bot.app import serve

        asyncio.run(serve(settings))
        return 0
    if command == "migrate":
        return asyncio.run(_migrate(settings))
    from bot.doctor import doctor

    return asyncio.run(doctor(settings))


async def _migrate(settings: Settings) -> int:
    from storage.db import Store

    store = await Store.open(settings)
    await store.close()
    print("database schema is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
