"""llmd: the llm-d serving stack in Python, with SGLang as first-class as vLLM."""

__version__ = "0.1.0"
