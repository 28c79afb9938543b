"""Building blocks shared by every model: parallel linears, norms, rotary, embeddings, attention."""
