"""Mistral, both ways: the Bedrock InvokeModel bodies (invoke.py: text and chat) and the mistral
provider's API (api.py)."""
