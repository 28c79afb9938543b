"""The HTTP server: SGLang's native API and an OpenAI-compatible API on starlette + uvicorn.

app.py            wiring: routes, auth middleware, error handlers, lifespan
state.py          what every handler shares (tokenizer manager, request builder, metrics)
generation.py     one request's life from the server's side (outputs, metrics, refusals)
native.py         /generate (SGLang's shape); sglang_fields.py SGLang's fields it accepts
operations.py     /health, /server_info, /get_load, /flush_cache, ... (SGLang's shapes)
openai_*.py       /v1/models, /v1/completions, /v1/chat/completions (OpenAI's shapes)
protocol.py       msgspec types of the native API; openai_protocol.py those of OpenAI's
errors.py, sse.py, metrics.py, config.py
"""
