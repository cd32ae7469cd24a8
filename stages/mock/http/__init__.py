"""`pipeline mock-server`: the simulation behind the OpenAI, Anthropic and Ollama wire formats over HTTP/1.1."""
