"""Extra commands the integration tests register on the real router."""

from __future__ import annotations

from bot.context import HandlerContext
from bot.events import IncomingEvent
from bot.router import Option, OptionType, Router
from bot.settings import EngineSettings

TEST_ENGINES = {
    "sleep": EngineSettings(impl="tests.support.app_engines:SleepEngine", queue_size=2, max_batch=1),
    "crash": EngineSettings(impl="tests.support.app_engines:CrashEngine"),
    "suicide": EngineSettings(impl="tests.support.app_engines:SuicideEngine", worker="process"),
}


def register_test_commands(router: Router) -> None:
    @router.command("sleep", "cmd_ping", options=[Option("seconds", OptionType.NUMBER, "cmd_ping", required=True)])
    async def sleep(event: IncomingEvent, ctx: HandlerContext) -> None:
        result = await ctx.pool.run("sleep", ctx.state["args"]["seconds"], event_id=event.event_id)
        await ctx.responder.send(f"{result} {ctx.state['args']['seconds']}")

    @router.command("crash", "cmd_ping")
    async def crash(event: IncomingEvent, ctx: HandlerContext) -> None:
        await ctx.pool.run("crash", None, event_id=event.event_id)

    @router.command("die", "cmd_ping", options=[Option("word", OptionType.TEXT, "cmd_ping")])
    async def die(event: IncomingEvent, ctx: HandlerContext) -> None:
        result = await ctx.pool.run("suicide", ctx.state["args"].get("word", "die"), event_id=event.event_id)
        await ctx.responder.send(str(result))

    @router.command(
        "typed", "cmd_ping",
        options=[
            Option("count", OptionType.INTEGER, "cmd_ping", required=True, min_value=1, max_value=10),
            Option("loud", OptionType.BOOLEAN, "cmd_ping"),
            Option("words", OptionType.TEXT, "cmd_ping"),
        ],
    )
    async def typed(event: IncomingEvent, ctx: HandlerContext) -> None:
        args = ctx.state["args"]
        text = " ".join([args.get("words", "hi")] * args["count"])
        await ctx.responder.send(text.upper() if args.get("loud") else text)

    @router.command("stream", "cmd_ping", options=[Option("words", OptionType.INTEGER, "cmd_ping")])
    async def stream(event: IncomingEvent, ctx: HandlerContext) -> None:
        async with ctx.responder.stream() as writer:
            for i in range(ctx.state["args"].get("words", 20)):
                await writer.write(f"w{i} ")
