"""The LLM agent against a real model served by llama-cpp-python (``make test-llm``)."""
