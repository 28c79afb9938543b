"""The scheduler's own CPU time per step, with a stand-in model runner that does no work.

256 requests decode together (after their prefills), so each step schedules 256 decodes,
allocates pages, appends tokens, checks stops and builds outputs. The figure is the step's time
minus the runner's launch and collect: what the scheduler adds to every forward pass (under
overlap scheduling the device computes meanwhile). Target: median < 1 ms. With and without
overlap, and the medians of its parts: building the batch, the launch, applying the results.
Then the few-shot pattern: the scheduler's seconds to take 256 prompts on one long prefix through.

    python benchmarks/bench_scheduler_overhead.py [--running 256] [--steps 300] [--overlap on]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Sequence

from radixserve.radix_cache import NaiveCache, RadixCache
from radixserve.runtime.scheduler.scheduler import Scheduler, SchedulerConfig
from radixserve.runtime.scheduler.step import StepHandle, StepRequest, StepResult
from radixserve.runtime.wire.messages import GenerateReq
from radixserve.runtime.wire.sampling_params import SamplingParams
from radixserve.runtime.wire.stats import StepStats
from radixserve.utils.gc_tuning import freeze_startup_objects


class NullHandle(StepHandle):
    __slots__ = ("results",)

    def __init__(self, results: list[StepResult]) -> None:
        super().__init__()
        self.results = results


class NullRunner:
    """A `StepRunner` that returns a fixed token for every request that samples; costs (almost)
    nothing."""

    model_name = "null"
    vocab_size = 32000

    def __init__(self, num_pages: int, context_len: int) -> None:
        self.num_kv_pages = num_pages
        self.context_len = context_len

    def launch(self, requests: Sequence[StepRequest]) -> StepHandle:
        return NullHandle([StepResult(next_token_id=7 if r.sample else None) for r in requests])

    def collect(self, handle: StepHandle) -> list[StepResult]:
        assert isinstance(handle, NullHandle)
        return handle.results

    def shutdown(self) -> None:
        pass


def measure(args: argparse.Namespace, overlap: bool) -> list[StepStats]:
    """The decode steps' figures, once every request is past its prefill."""
    rng = random.Random(0)
    num_pages = 65536
    runner = NullRunner(num_pages, context_len=32768)
    scheduler = Scheduler(
        runner,
        RadixCache(num_pages, page_size=args.page_size),
        SchedulerConfig(
            page_size=args.page_size,
            context_len=runner.context_len,
            chunked_prefill_size=1 << 20,
            max_prefill_tokens=1 << 20,
            max_running_requests=args.running,
        ),
        eos_token_ids=[0],
        overlap=overlap,
    )
    system = [rng.randrange(1, 30000) for _ in range(300)]
    for i in range(args.running):
        prompt = system + [rng.randrange(1, 30000) for _ in range(rng.randrange(20, 200))]
        params = SamplingParams(max_new_tokens=args.steps + 10, ignore_eos=True)
        scheduler.add_request(GenerateReq(rid=f"r{i}", input_ids=prompt, sampling=params))
    while any(r.is_prefilling or not r.output_ids for r in scheduler.running) or scheduler.waiting:
        scheduler.step()
    freeze_startup_objects()  # as the scheduler process does once the model is loaded
    steps = []
    for _ in range(args.steps):
        scheduler.step()
        assert scheduler.last_step.batch_size == args.running
        steps.append(scheduler.last_step)
    return steps


def few_shot_seconds(page_size: int, radix: bool) -> tuple[float, int]:
    """Seconds and steps to schedule 256 prompts on one 1,200-token prefix (64-token questions,
    16 new tokens each) through the stand-in runner: admission's own cost, which the few-shot
    workload pays every step while the prompts wait for the shared prefix to land."""
    rng = random.Random(1)
    num_pages = 1 << 16
    runner = NullRunner(num_pages, context_len=32768)
    cache = (
        RadixCache(num_pages, page_size=page_size) if radix else NaiveCache(num_pages, page_size)
    )
    scheduler = Scheduler(
        runner,
        cache,
        SchedulerConfig(
            page_size=page_size,
            context_len=runner.context_len,
            chunked_prefill_size=16384,
            max_prefill_tokens=16384,
            max_running_requests=1024,
        ),
        eos_token_ids=[0],
        overlap=True,
    )
    system = [rng.randrange(1, 30000) for _ in range(1200)]
    start = time.perf_counter()
    for i in range(256):
        prompt = system + [rng.randrange(1, 30000) for _ in range(64)]
        params = SamplingParams(max_new_tokens=16, ignore_eos=True)
        scheduler.add_request(GenerateReq(rid=f"q{i}", input_ids=prompt, sampling=params))
    steps = 0
    while scheduler.running or scheduler.waiting:
        scheduler.step()
        steps += 1
    return time.perf_counter() - start, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--running", type=int, default=256)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--page-size", type=int, default=16)
    parser.add_argument(
        "--overlap", choices=("both", "on", "off"), default="both", help="overlap scheduling"
    )
    args = parser.parse_args()

    modes = {"both": (False, True), "on": (True,), "off": (False,)}[args.overlap]
    print(f"\nscheduler CPU time per decode step, {args.running} running requests (ms)")
    print(f"{'overlap':>7} | {'median':>6} | {'p99':>6} | build | launch | results | target < 1 ms")
    for overlap in modes:
        steps = measure(args, overlap)
        times = sorted(s.schedule_seconds for s in steps)
        median = statistics.median(times) * 1e3
        p99 = times[int(0.99 * (len(times) - 1))] * 1e3
        build, launch, results = (
            1e3 * statistics.median(getattr(s, name) for s in steps)
            for name in ("build_seconds", "launch_seconds", "result_seconds")
        )
        print(
            f"{'on' if overlap else 'off':>7} | {median:6.3f} | {p99:6.3f} | {build:5.3f} | "
            f"{launch:6.3f} | {results:7.3f} | {'met' if median < 1 else 'NOT met'}"
        )
    print("\nfew-shot admission: 256 prompts on one 1,200-token prefix, stand-in runner")
    for radix in (True, False):
        seconds, steps = few_shot_seconds(args.page_size, radix)
        print(
            f"  radix {'on ' if radix else 'off'}: {seconds:.3f} s of scheduling over {steps} steps"
        )


if __name__ == "__main__":
    main()
