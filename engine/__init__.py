"""Local inference behind one streaming interface.

Importing this package is cheap: TVM and the model load only when an engine is opened.
"""

from engine.api import (
    Alternative,
    Engine,
    EngineEvent,
    EngineInfo,
    FinishEvent,
    GenerationRequest,
    Timings,
    TokenEvent,
    Usage,
)
from engine.errors import (
    BackendUnavailable,
    ContextWindowExceeded,
    EngineError,
    ModelFileError,
)

__all__ = [
    "Alternative",
    "BackendUnavailable",
    "ContextWindowExceeded",
    "Engine",
    "EngineError",
    "EngineEvent",
    "EngineInfo",
    "FinishEvent",
    "GenerationRequest",
    "ModelFileError",
    "Timings",
    "TokenEvent",
    "Usage",
]
