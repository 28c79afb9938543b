"""Finding a model, reading its config and tokenizer, and streaming its weights."""
