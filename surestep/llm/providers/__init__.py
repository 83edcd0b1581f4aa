"""Provider adapters: one SDK each, behind the :class:`~surestep.llm.types.Provider`
protocol.

Importing this package imports no SDK; constructing an adapter does, and fails with the
``pip install`` line when the SDK is missing.
"""

from surestep.llm.providers.anthropic_sdk import AnthropicProvider
from surestep.llm.providers.openai_sdk import OpenAIProvider

__all__ = ["AnthropicProvider", "OpenAIProvider"]
