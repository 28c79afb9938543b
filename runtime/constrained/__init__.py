"""Structured outputs: grammars (regex, JSON schema, EBNF) that constrain what a request samples.

`grammar.py` checks a request's grammar fields (torch-free: the HTTP process uses it);
`matcher.py` gives the scheduler an llguidance matcher per request; `bitmask.py` applies a
matcher's allowed-token bitmask to a batch of logits (torch, any device). Import from the
modules: this package's import stays free of torch.
"""
