"""Analytics: one row per proxied call (tokens, cost, savings) in SQLite, and the queries that read them."""
