"""autobots: a conversational multi-agent chat server on classic AutoGen."""

__version__ = "0.1.0"
