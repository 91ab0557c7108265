"""The OpenAI Images API surface: typed protocol, request building and responses, image files."""
