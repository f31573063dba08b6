"""Pure converters between Anthropic Messages (the pivot) and other providers' formats: no I/O."""
