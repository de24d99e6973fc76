"""Platform adapters: translate between a chat platform and `IncomingEvent`/`Responder`; never decide."""
