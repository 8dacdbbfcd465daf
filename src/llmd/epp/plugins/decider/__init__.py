"""P/D deciders: whether a request is worth a prefill stage (llm-d `deciderPlugin`s)."""
