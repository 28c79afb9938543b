"""frontend_lang."""
