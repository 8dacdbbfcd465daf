"""Request parsers (llm-d's `parser` section): the request body → the scheduler's request."""
