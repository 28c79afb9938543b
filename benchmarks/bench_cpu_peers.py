"""radixserve against llama.cpp's server on the CPU: the same GGUF, the same four workloads.

Starts radixserve on the embedded SmolLM2 GGUF (its float32 dequantization; products of a few
rows read the file's Q4_1 / Q8_0 blocks to the same values, --disable-cpu-gguf-blocks passed
through --radixserve-args turns that off) and, where installed,
llama.cpp's server on the very same file (`llama-server` on PATH, else llama-cpp-python's
`python -m llama_cpp.server`), then sends each workload through the OpenAI API to each system,
interleaved (the order of the systems alternates per round) and repeated:

    stream    one streamed completion of --stream-tokens tokens
    batch     --concurrent completions at once, --concurrent-tokens each
    fewshot   --fewshot-questions questions at once after one shared few-shot prefix
    chat      --chats chats at once, --turns turns each (a turn after the previous answer)
    long      --long-prompts prompts at once of --long-sentences sentences each (about 21
              tokens a sentence: 1,670 tokens by default, as ShareGPT's long first turns;
              prefill bound, attention over long contexts among it), --long-tokens each

Every round prefixes its prompts with the round number, so nothing is cached across rounds;
within a round the few-shot prefix and the chat histories are shared, where a prefix cache wins.
Greedy, EOS ignored where the server takes `ignore_eos`. For each system and workload it prints
the median over rounds of output tok/s, wall time and the server's CPU time (user + system of
the server's whole process tree, from psutil), and peer / radixserve ratios. The machine is
shared: figures of one run taken side by side compare; absolute ones do not.

    python -m benchmarks.bench_cpu_peers [--rounds 3] [--threads N] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

import httpx
import psutil

from radixserve.runtime.config.model_source import resolve_model_source

WORKLOADS = ("stream", "batch", "fewshot", "chat", "long")
START_TIMEOUT_S = 900.0
REQUEST_TIMEOUT_S = 900.0
FEWSHOT = [
    ("What is the capital of France?", "Paris."),
    ("How many legs does a spider have?", "Eight."),
    ("What gas do plants take in to make sugar?", "Carbon dioxide."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare."),
    ("What is the boiling point of water at sea level in Celsius?", "100 degrees."),
    ("Which planet is known as the Red Planet?", "Mars."),
]
QUESTIONS = [
    "What is the largest ocean on Earth?", "How many days are in a leap year?",
    "What is the chemical symbol for gold?", "Which animal is known as the king of the jungle?",
    "What is the square root of 81?", "Who painted the Mona Lisa?",
    "What is the freezing point of water in Fahrenheit?", "Which continent is Egypt in?",
    "What language is spoken in Brazil?", "How many minutes are in an hour?",
]  # fmt: skip
TOPICS = ["a lighthouse keeper", "a lost key", "a mountain village", "an old clock",
          "a robot gardener", "a rainy market", "a night train", "a paper boat"]  # fmt: skip


@dataclass(slots=True)
class Sizes:
    stream_tokens: int = 32
    concurrent: int = 8
    concurrent_tokens: int = 16
    fewshot_questions: int = 8
    fewshot_tokens: int = 16
    chats: int = 4
    turns: int = 2
    chat_tokens: int = 32
    long_prompts: int = 2
    long_sentences: int = 80
    long_tokens: int = 16


@dataclass(slots=True)
class Server:
    name: str
    command: list[str]
    port: int
    log_path: str
    process: subprocess.Popen[bytes] | None = None
    model: str = "default"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child writes it until stopped
        self.process = subprocess.Popen(
            self.command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start-up:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=5).status_code == 200:
                    models = httpx.get(f"{self.base_url}/v1/models", timeout=30).json()
                    self.model = models["data"][0]["id"]
                    return
            except (httpx.HTTPError, KeyError, IndexError, ValueError):
                pass
            time.sleep(1.0)
        raise RuntimeError(f"{self.name} did not start in {START_TIMEOUT_S} s:\n{self.log_tail()}")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server and every live descendant."""
        assert self.process is not None
        root = psutil.Process(self.process.pid)
        total = 0.0
        for proc in [root, *root.children(recursive=True)]:
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total

    def log_tail(self, chars: int = 3000) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()[-chars:]

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass(slots=True)
class Measurement:
    system: str
    workload: str
    round: int
    output_tokens: int
    wall_s: float
    cpu_s: float
    errors: list[str] = field(default_factory=list)

    @property
    def tok_per_s(self) -> float:
        return self.output_tokens / self.wall_s if self.wall_s > 0 else 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def llama_cpp_command(gguf: str, port: int, threads: int | None, slots: int) -> list[str] | None:
    """The llama.cpp server command on this machine, or None when neither form is installed."""
    binary = shutil.which("llama-server")
    if binary is not None:
        command = [binary, "-m", gguf, "--host", "127.0.0.1", "--port", str(port)]
        command += ["-np", str(slots), "-c", str(2048 * slots)]
        return command + (["-t", str(threads)] if threads else [])
    if importlib.util.find_spec("llama_cpp") is not None:
        command = [sys.executable, "-m", "llama_cpp.server", "--model", gguf]
        command += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096"]
        return command + (["--n_threads", str(threads)] if threads else [])
    return None


def radixserve_command(
    gguf: str, port: int, threads: int | None, extra: list[str] | None = None
) -> list[str]:
    command = [sys.executable, "-m", "radixserve.launch_server", "--model-path", gguf]
    command += ["--port", str(port), "--log-level", "warning", *(extra or [])]
    return command + (["--cpu-threads", str(threads)] if threads else [])


async def complete(
    client: httpx.AsyncClient, server: Server, body: dict, chat: bool
) -> tuple[int, str]:
    """Sends one request (streamed when body says so); returns (completion tokens, text)."""
    path = "/v1/chat/completions" if chat else "/v1/completions"
    body = {"model": server.model, "temperature": 0, "ignore_eos": True, **body}
    if not body.get("stream"):
        response = await client.post(server.base_url + path, json=body)
        response.raise_for_status()
        data = response.json()
        choice = data["choices"][0]
        text = choice["message"]["content"] if chat else choice["text"]
        return int(data["usage"]["completion_tokens"]), text or ""
    body["stream_options"] = {"include_usage": True}
    tokens, pieces = 0, []
    async with client.stream("POST", server.base_url + path, json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            event = json.loads(line[5:])
            for choice in event.get("choices") or []:
                pieces.append(
                    choice.get("text") or (choice.get("delta") or {}).get("content") or ""
                )
            if event.get("usage"):
                tokens = int(event["usage"]["completion_tokens"])
    return tokens, "".join(pieces)


async def run_workload(server: Server, workload: str, round_: int, sizes: Sizes) -> list:
    """Sends one workload; returns the completion token count of every request (or errors)."""
    tag = f"Round {round_}."
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S, limits=limits) as client:
        if workload == "stream":
            body = {"prompt": f"{tag} Write a short story about {TOPICS[round_ % len(TOPICS)]}.",
                    "max_tokens": sizes.stream_tokens, "stream": True}  # fmt: skip
            return [(await complete(client, server, body, chat=False))[0]]
        if workload == "batch":
            bodies = [{"prompt": f"{tag} Describe {TOPICS[i % len(TOPICS)]} in one paragraph.",
                       "max_tokens": sizes.concurrent_tokens} for i in range(sizes.concurrent)]  # fmt: skip
            return await gather(complete(client, server, b, chat=False) for b in bodies)
        if workload == "fewshot":
            shots = "".join(f"Q: {q}\nA: {a}\n\n" for q, a in FEWSHOT)
            prefix = f"{tag} Answer each question briefly.\n\n{shots}"
            bodies = [{"prompt": f"{prefix}Q: {QUESTIONS[i % len(QUESTIONS)]}\nA:",
                       "max_tokens": sizes.fewshot_tokens} for i in range(sizes.fewshot_questions)]  # fmt: skip
            return await gather(complete(client, server, b, chat=False) for b in bodies)
        if workload == "long":
            bodies = [{"prompt": long_prompt(tag, i, sizes.long_sentences),
                       "max_tokens": sizes.long_tokens} for i in range(sizes.long_prompts)]  # fmt: skip
            return await gather(complete(client, server, b, chat=False) for b in bodies)
        return await gather(chat(client, server, tag, i, sizes) for i in range(sizes.chats))


def long_prompt(tag: str, i: int, sentences: int) -> str:
    """A document of numbered notes, distinct per prompt (`i`) from its first sentence on."""
    notes = " ".join(
        f"Note {k} of file {i}: {TOPICS[(k + i) % len(TOPICS)]} was seen near mile {k * 7 + i}."
        for k in range(sentences)
    )
    return f"{tag} File {i}. {notes}\nSummarize the notes above in one sentence:"


async def chat(client: httpx.AsyncClient, server: Server, tag: str, i: int, sizes: Sizes) -> int:
    messages = [{"role": "system", "content": f"{tag} You are a helpful, concise assistant."}]
    total = 0
    for turn in range(sizes.turns):
        ask = f"Tell me about {TOPICS[(i + turn) % len(TOPICS)]}." if turn == 0 else "Go on."
        messages.append({"role": "user", "content": ask})
        body = {"messages": messages, "max_tokens": sizes.chat_tokens}
        tokens, text = await complete(client, server, body, chat=True)
        messages.append({"role": "assistant", "content": text})
        total += tokens
    return total


async def gather(coros) -> list:
    results = await asyncio.gather(*coros, return_exceptions=True)
    return [r[0] if isinstance(r, tuple) else r for r in results]


def measure(server: Server, workload: str, round_: int, sizes: Sizes) -> Measurement:
    cpu0, start = server.cpu_seconds(), time.perf_counter()
    results = asyncio.run(run_workload(server, workload, round_, sizes))
    wall, cpu = time.perf_counter() - start, server.cpu_seconds() - cpu0
    tokens = sum(r for r in results if isinstance(r, int))
    errors = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
    return Measurement(server.name, workload, round_, tokens, wall, cpu, errors)


def summarize(results: list[Measurement], systems: list[str]) -> list[dict]:
    rows = []
    for workload in WORKLOADS:
        for system in systems:
            runs = [m for m in results if m.system == system and m.workload == workload]
            if not runs:
                continue
            rows.append({
                "system": system, "workload": workload, "rounds": len(runs),
                "output_tokens": statistics.median(m.output_tokens for m in runs),
                "tok_per_s": statistics.median(m.tok_per_s for m in runs),
                "wall_s": statistics.median(m.wall_s for m in runs),
                "cpu_s": statistics.median(m.cpu_s for m in runs),
                "errors": [e for m in runs for e in m.errors],
            })  # fmt: skip
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"\n{'workload':<8} {'system':<10} {'out tok':>7} {'tok/s':>7} {'wall s':>7} "
          f"{'CPU s':>7} {'wall x':>7} {'CPU x':>7}")  # fmt: skip
    base = {r["workload"]: r for r in rows if r["system"] == "radixserve"}
    for r in rows:
        ours = base.get(r["workload"])
        wall_x = r["wall_s"] / ours["wall_s"] if ours and ours["wall_s"] else float("nan")
        cpu_x = r["cpu_s"] / ours["cpu_s"] if ours and ours["cpu_s"] else float("nan")
        print(f"{r['workload']:<8} {r['system']:<10} {r['output_tokens']:>7.0f} "
              f"{r['tok_per_s']:>7.1f} {r['wall_s']:>7.2f} {r['cpu_s']:>7.2f} "
              f"{wall_x:>6.2f}x {cpu_x:>6.2f}x")  # fmt: skip
        for error in r["errors"][:3]:
            print(f"    error: {error}")
    print("(medians over rounds; x = this system / radixserve, above 1 means radixserve uses less)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for every server (default: each server's own)")  # fmt: skip
    parser.add_argument("--no-peers", action="store_true", help="radixserve alone")
    parser.add_argument("--radixserve-args", default="",
                        help="extra server flags for radixserve, one string "
                        "(e.g. '--disable-cpu-gguf-blocks')")  # fmt: skip
    parser.add_argument("--llama-cpp-gguf", default=None,
                        help="the GGUF llama.cpp serves (default: the embedded one, as stored); "
                        "e.g. a float32 copy made with llama-quantize --allow-requantize IN OUT "
                        "F32, the same weights as radixserve's float32")  # fmt: skip
    parser.add_argument("--json-out", default=None, help="write the summary rows as JSON here")
    for name, default in asdict(Sizes()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=default)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    sizes = Sizes(**{k: getattr(args, k) for k in asdict(Sizes())})
    gguf = resolve_model_source(None).gguf_path
    if gguf is None:
        raise SystemExit("the embedded model has no GGUF file")
    logs = tempfile.mkdtemp(prefix="bench_cpu_peers_")
    port = free_port()
    extra = args.radixserve_args.split()
    servers = [Server("radixserve", radixserve_command(gguf, port, args.threads, extra), port,
                      os.path.join(logs, "radixserve.log"))]  # fmt: skip
    slots = max(sizes.concurrent, sizes.fewshot_questions, sizes.chats)
    port = free_port()
    peer_gguf = args.llama_cpp_gguf or gguf
    llama = None if args.no_peers else llama_cpp_command(peer_gguf, port, args.threads, slots)
    if llama is not None:
        servers.append(Server("llama.cpp", llama, port, os.path.join(logs, "llama_cpp.log")))
    print(f"model: {gguf} (radixserve: its float32 dequantization, few-row products over its "
          f"blocks to the same values); llama.cpp serves {peer_gguf}")  # fmt: skip
    print(f"CPUs available: {len(os.sched_getaffinity(0))}, load average: {os.getloadavg()}")
    if args.no_peers:
        print("llama.cpp server: not run (--no-peers)")
    elif llama is None:
        print("llama.cpp server: NOT INSTALLED (no llama-server on PATH, no llama_cpp module); "
              "radixserve ran alone")  # fmt: skip
    print("vLLM CPU: not run (optional, not installed here)")
    results: list[Measurement] = []
    try:
        for server in servers:
            server.start()
        for server in servers:
            server.wait_ready()
        for round_ in range(args.rounds):
            order = servers if round_ % 2 == 0 else servers[::-1]
            for workload in args.workloads:
                for server in order:
                    m = measure(server, workload, round_, sizes)
                    results.append(m)
                    print(f"round {round_} {workload:<8} {m.system:<10} {m.output_tokens:>4} tok "
                          f"{m.wall_s:6.2f} s wall {m.cpu_s:6.2f} s CPU", flush=True)  # fmt: skip
    finally:
        for server in servers:
            server.stop()
    rows = summarize(results, [s.name for s in servers])
    print_table(rows)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    """SIGTERM (`kill`, `pkill`, a CI timeout) as SystemExit, so that main's `finally` stops the
    servers it started in their own sessions instead of leaving them running."""
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    main()
