"""`shadowlens worker` whose semantic encoder is slow: the semantic broker test's fault
injection, kept out of the production code.

    SHADOWLENS_TEST_ENCODE_DELAY_S=2 SHADOWLENS_SEMANTIC=onnx python -m tests.slow_encoder_worker

runs the real worker (`streams.worker.run_worker`, settings from ``SHADOWLENS_*``) with one
change: every encode of the real backend first sleeps ``SHADOWLENS_TEST_ENCODE_DELAY_S``,
as a model on a busy or slow machine would.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from shadowlens.comparators.semantic import Encoder
from shadowlens.judge.policy import load_policy
from shadowlens.streams import semantic_stage
from shadowlens.streams.config import Settings
from shadowlens.streams.worker import run_worker

DELAY_ENV = "SHADOWLENS_TEST_ENCODE_DELAY_S"


class SlowEncoder:
    def __init__(self, inner: Encoder, delay_s: float) -> None:
        self.inner = inner
        self.delay_s = delay_s

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        time.sleep(self.delay_s)
        return self.inner.encode(texts)


def main() -> None:
    delay_s = float(os.environ[DELAY_ENV])
    make = semantic_stage.make_encoder

    def slow(*args: Any, **kwargs: Any) -> Encoder:
        return SlowEncoder(make(*args, **kwargs), delay_s)

    semantic_stage.make_encoder = slow  # type: ignore[assignment]
    settings = Settings.from_env()
    run_worker(settings, load_policy(settings.policy))


if __name__ == "__main__":
    main()
