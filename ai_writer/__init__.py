"""ai-writer: a local, offline novel-continuation tool built on RWKV language models."""

__version__ = "0.1.0"
