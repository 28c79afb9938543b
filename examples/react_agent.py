"""A multi-turn ReAct agent with two tools: a calculator and a lookup table.

    python examples/react_agent.py [--url http://127.0.0.1:30000] [--max-steps 4]

Each step is one assistant turn, "Thought: ...\\nAction: tool[argument]"; the program runs the
tool in Python and answers with a user turn "Observation: ...". The tool name is chosen with
`rs.select`, so even a small model always produces an action the program can parse; the
argument is generated up to "]". Every step's prompt extends the previous one, so the radix cache
holds the conversation and each step only computes its new turn.
"""

from __future__ import annotations

import argparse
import ast
import operator
from collections.abc import Callable

import radixserve as rs

FACTS = {
    "population of france": "68 million",
    "population of japan": "124 million",
    "height of mount everest": "8849 meters",
    "height of the eiffel tower": "330 meters",
    "capital of australia": "Canberra",
    "boiling point of water": "100 degrees Celsius",
}

SYSTEM = """You answer questions by using tools, one step at a time.
Tools:
- lookup[key]: looks up a fact, e.g. lookup[height of mount everest]
- calculator[expression]: computes arithmetic, e.g. calculator[3 * (4 + 5)]
- finish[answer]: gives the final answer
Write one thought, then one action.

Example:
Question: How tall are two Eiffel towers stacked?
Thought: I need the height of the Eiffel tower.
Action: lookup[height of the eiffel tower]
Observation: 330 meters
Thought: Two of them are 2 * 330 meters.
Action: calculator[2 * 330]
Observation: 660
Thought: I know the answer.
Action: finish[660 meters]"""

QUESTIONS = [
    "What is the capital of Australia?",
    "How tall are three Mount Everests stacked?",
    "What is the population of Japan?",
    "What is 17 times 23?",
]

_OPS: dict[type, Callable[..., float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
}


def calculator(expression: str) -> str:
    """Arithmetic only: the expression is parsed, never passed to eval()."""

    def value(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](value(node.operand))
        raise ValueError("only numbers and + - * / ** are allowed")

    try:
        result = value(ast.parse(expression.replace("^", "**"), mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError, TypeError) as exc:
        return f"error: {exc}"
    return f"{result:g}"


def lookup(key: str) -> str:
    wanted = key.strip().lower()
    for fact, answer in FACTS.items():
        if wanted and (wanted in fact or fact in wanted):
            return answer
    return "not found; known keys: " + ", ".join(FACTS)


TOOLS: dict[str, Callable[[str], str]] = {"calculator": calculator, "lookup": lookup}


@rs.function
def react_agent(s, question, max_steps=4):
    s += rs.system(SYSTEM)
    s += rs.user(f"Question: {question}")
    trace = []
    for _ in range(max_steps):
        with s.assistant():
            s += "Thought:" + rs.gen("thought", max_tokens=24, stop=["\n", "Action"])
            s += "\nAction: " + rs.select("action", ["lookup", "calculator", "finish"])
            s += "[" + rs.gen("argument", max_tokens=16, stop=["]", "\n"]) + "]"
        action, argument = s["action"], s["argument"].strip()
        if action == "finish":
            trace.append((s["thought"].strip(), action, argument, ""))
            return {"answer": argument, "trace": trace}
        observation = TOOLS[action](argument)
        trace.append((s["thought"].strip(), action, argument, observation))
        s += rs.user(f"Observation: {observation}")
    return {"answer": None, "trace": trace}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=None, help="a running server (default: start one)")
    parser.add_argument("--max-steps", type=int, default=4)
    args = parser.parse_args()

    with rs.connect(args.url) as backend:
        batch = [{"question": q, "max_steps": args.max_steps} for q in QUESTIONS]
        states = react_agent.run_batch(batch, backend=backend, temperature=0, progress_bar=True)
    for question, state in zip(QUESTIONS, states, strict=True):
        print(f"\nQ: {question}")
        if state.error() is not None:
            print(f"  error: {state.error()}")
            continue
        for thought, action, argument, observation in state.ret_value["trace"]:
            print(f"  thought: {thought}\n  action:  {action}[{argument}]")
            if observation:
                print(f"  observed: {observation}")
        print(f"  answer:  {state.ret_value['answer']}")


if __name__ == "__main__":
    main()
