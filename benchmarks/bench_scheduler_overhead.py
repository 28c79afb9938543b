"""The scheduler's own CPU time per step, with a stand-in model runner that does no work.

256 requests decode together (after their prefills), so each step schedules 256 decodes,
allocates pages, appends tokens, checks stops and builds outputs. The figure is the step's time
minus the runner call: what the scheduler adds to every forward pass. Target: median < 1 ms.

    python benchmarks/bench_scheduler_overhead.py [--running 256] [--steps 300]
"""

from __future__ import annotations

import argparse
import random
import statistics
from collections.abc import Sequence

from radixserve.radix_cache import RadixCache
from radixserve.runtime.scheduler.scheduler import Scheduler, SchedulerConfig
from radixserve.runtime.scheduler.step import StepRequest, StepResult
from radixserve.runtime.wire.messages import GenerateReq
from radixserve.runtime.wire.sampling_params import SamplingParams
from radixserve.utils.gc_tuning import freeze_startup_objects


class NullRunner:
    """A `StepRunner` that returns a fixed token for every request that samples; costs (almost)
    nothing."""

    model_name = "null"
    vocab_size = 32000

    def __init__(self, num_pages: int, context_len: int) -> None:
        self.num_kv_pages = num_pages
        self.context_len = context_len

    def step(self, requests: Sequence[StepRequest]) -> list[StepResult]:
        return [StepResult(next_token_id=7 if r.sample else None) for r in requests]

    def shutdown(self) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--running", type=int, default=256)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--page-size", type=int, default=16)
    args = parser.parse_args()

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
    )
    system = [rng.randrange(1, 30000) for _ in range(300)]
    for i in range(args.running):
        prompt = system + [rng.randrange(1, 30000) for _ in range(rng.randrange(20, 200))]
        params = SamplingParams(max_new_tokens=args.steps + 10, ignore_eos=True)
        scheduler.add_request(GenerateReq(rid=f"r{i}", input_ids=prompt, sampling=params))
    while any(r.is_prefilling or not r.output_ids for r in scheduler.running) or scheduler.waiting:
        scheduler.step()
    freeze_startup_objects()  # as the scheduler process does once the model is loaded
    times = []
    for _ in range(args.steps):
        scheduler.step()
        assert scheduler.last_step.batch_size == args.running
        times.append(scheduler.last_step.schedule_seconds)
    times.sort()
    median = statistics.median(times) * 1e3
    p99 = times[int(0.99 * (len(times) - 1))] * 1e3
    print(f"\nscheduler CPU time per decode step, {args.running} running requests")
    print(
        f"median {median:.3f} ms | p99 {p99:.3f} ms | target < 1 ms: {'met' if median < 1 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
