"""Provider adapters, one module per provider (request/response/stream transforms as pure functions)."""
