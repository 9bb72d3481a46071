//! Chat templates: Jinja (Hugging Face) to Ollama Go templates, proven equal by rendering both.
