"""LLM steps: model calls as durable, recorded, budgeted attempts (docs/llm.md).

``app.llm_step(...)`` declares one; ``surestep.llm.complete`` makes a recorded call from
inside a step of your own. Providers are adapters over the official SDKs (``openai``,
``anthropic``), optional extras imported only when a provider of theirs is used.
"""

from __future__ import annotations

from surestep.llm.complete import complete
from surestep.llm.fake import FakeLLM
from surestep.llm.faults import (
    BudgetExceededError,
    ModelChainError,
    ModelConnectionError,
    ModelError,
    ModelOutputError,
    ModelRateLimitedError,
    ModelRequestError,
    ModelServerError,
    ModelTimeoutError,
)
from surestep.llm.ledger import ModelCall
from surestep.llm.step import AnswerRejectedError, LLMStep, ModelAnswer
from surestep.llm.types import ChatRequest, ChatResponse, Provider, Usage

__all__ = [
    "AnswerRejectedError",
    "BudgetExceededError",
    "ChatRequest",
    "ChatResponse",
    "FakeLLM",
    "LLMStep",
    "ModelAnswer",
    "ModelCall",
    "ModelChainError",
    "ModelConnectionError",
    "ModelError",
    "ModelOutputError",
    "ModelRateLimitedError",
    "ModelRequestError",
    "ModelServerError",
    "ModelTimeoutError",
    "Provider",
    "Usage",
    "complete",
]
