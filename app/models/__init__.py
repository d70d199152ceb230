"""Getting models into Tandem's models folder: the catalog of installed models, pulls from the
Hugging Face Hub, imports of GGUF files and of Ollama's store, and GGUFs found on disk."""
