"""OpenAI Chat Completions, both ways: OpenAI-like Bedrock InvokeModel bodies (invoke.py) and the
openai provider's API (api.py)."""
