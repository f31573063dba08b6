"""CCO: a caching, routing and cost-tracking proxy for LLM APIs."""

__version__ = "2026.11.1"
