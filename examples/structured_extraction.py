"""Structured extraction: turn free-text orders into JSON records that always parse.

    python examples/structured_extraction.py [--url http://127.0.0.1:30000]

Every record is generated under a JSON schema (`rs.gen(json_schema=...)`), so each one parses and
has every field with the right type, even from a 135M-parameter model; a regex-constrained
`rs.gen` then grades the order's urgency on a fixed scale. The shared instructions are computed
once (radix cache), and the keys the schema forces are fed as one chunk (jump-forward).
"""

from __future__ import annotations

import argparse
import json

import radixserve as rs

ORDER_SCHEMA = {
    "type": "object",
    "properties": {
        "customer": {"type": "string", "maxLength": 24},
        "item": {"type": "string", "maxLength": 24},
        "quantity": {"type": "integer", "minimum": 1, "maximum": 999},
        "express": {"type": "boolean"},
    },
    "required": ["customer", "item", "quantity", "express"],
    "additionalProperties": False,
}
ORDERS = [
    "Hi, this is Maria. Please send 3 blue notebooks, no rush.",
    "Tom here: I need 12 AA batteries by tomorrow morning, express please!",
    "Could you ship two hundred paper cups to Aiko? Standard shipping is fine.",
    "Urgent from Lars: 1 replacement laptop charger, overnight delivery.",
]


@rs.function
def extract(s, order):
    s += rs.system("You extract orders into JSON. Reply with the JSON only.")
    s += rs.user(f"Order: {order}")
    s += rs.assistant(rs.gen("record", json_schema=ORDER_SCHEMA, max_tokens=96, temperature=0))
    s += rs.user("How urgent is this order, from 1 (not urgent) to 5 (very urgent)?")
    s += rs.assistant(rs.gen("urgency", regex="[1-5]", temperature=0))
    return {**json.loads(s["record"]), "urgency": int(s["urgency"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=None, help="a running server (default: start one)")
    args = parser.parse_args()
    with rs.connect(args.url) as endpoint:
        rs.set_default_backend(endpoint)
        states = extract.run_batch([{"order": o} for o in ORDERS], num_threads=4)
        for order, state in zip(ORDERS, states, strict=True):
            print(f"{order}\n  -> {state.ret_value}")


if __name__ == "__main__":
    main()
