"""A real OpenAI-compatible ``/v1/chat/completions`` server on 127.0.0.1 that answers as a
recorded judge, for the live preference judge's end-to-end tests (LiteLLM talks HTTP to it).

It reads the two answers between the judge prompt's markers
(`comparators.preference.judge_messages`), looks the pair up in recorded judgments and says
"VERDICT: B" when the recorded judge preferred answer B, "VERDICT: A" when it preferred A,
"VERDICT: TIE" on a tie, and something unreadable for a pair it does not know. It can fail
its first requests (HTTP 500) or answer slowly, and it records every request it got.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from shadowlens.comparators.preference import (
    ANSWER_A,
    ANSWER_B,
    END_A,
    END_B,
    RecordedJudgments,
)

PROMPT_TOKENS = 900
COMPLETION_TOKENS = 4


def _between(text: str, start: str, end: str) -> str:
    return text.split(start + "\n", 1)[1].split("\n" + end, 1)[0]


class JudgeStub:
    """Start with `start()` (returns the base URL to give LiteLLM), stop with `stop()`."""

    def __init__(
        self, judgments: RecordedJudgments, *, fail_first: int = 0, delay_s: float = 0.0
    ) -> None:
        self.judgments = judgments
        self.fail_first = fail_first
        self.delay_s = delay_s
        self.requests: list[dict[str, Any]] = []  # request bodies, in arrival order
        self.orders: list[tuple[str, str]] = []  # (answer A, answer B) of each judged call
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def reply(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests.append(body)
            failing = len(self.requests) <= self.fail_first
        if failing:
            return 500, {"error": {"message": "stub: failing on purpose", "type": "server_error"}}
        time.sleep(self.delay_s)
        user = body["messages"][-1]["content"]
        a, b = _between(user, ANSWER_A, END_A), _between(user, ANSWER_B, END_B)
        with self._lock:
            self.orders.append((a, b))
        win_b = self.judgments.win(a, b)
        if win_b is None:
            text = "I cannot compare these."
        else:
            text = "VERDICT: " + ("B" if win_b > 0.5 else "A" if win_b < 0.5 else "TIE")
        return 200, {
            "id": f"chatcmpl-stub-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "judge-stub"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": PROMPT_TOKENS,
                "completion_tokens": COMPLETION_TOKENS,
                "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
            },
        }

    def start(self) -> str:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self.send_error(404)
                    return
                length = int(self.headers.get("Content-Length", 0))
                status, doc = stub.reply(json.loads(self.rfile.read(length)))
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_port}/v1"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
