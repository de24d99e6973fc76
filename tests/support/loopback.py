"""What every loopback stand-in shares: an aiohttp app on a free 127.0.0.1 port, `async with` to run it."""

from __future__ import annotations

from typing import Self

from aiohttp import web


class LoopbackServer:
    """Subclasses build their app in `start()` and hand it to `_serve`; `url` is set once it listens."""

    url = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> Self:
        raise NotImplementedError

    async def _serve(self, app: web.Application, path: str = "", **runner_options: object) -> Self:
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0, **runner_options)  # type: ignore[arg-type]
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}{path}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
