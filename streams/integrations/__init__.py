"""Adapters that turn a gateway library's calls into shadowlens events.

Each adapter imports its library itself and is imported only by the gateways that use it,
so that library stays an optional dependency of shadowlens (``pip install
shadowlens[litellm]`` for `shadowlens.streams.integrations.litellm_callback`).
"""
