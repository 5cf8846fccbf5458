"""The Anthropic Messages format, both ways: as a Bedrock InvokeModel body (invoke.py) and as the
anthropic provider's API (api.py)."""
