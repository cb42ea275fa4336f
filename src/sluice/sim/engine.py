"""The engine model: vLLM v1's continuous-batching scheduler over a simulated KV cache, with no
I/O and no clock. The caller owns time:

    duration = engine.start_step(now)     # None when there is nothing to run
    ... duration seconds later ...
    outputs = engine.finish_step(now + duration)

``start_step`` picks the batch (running requests first, then waiting ones while the token budget,
``max_num_seqs``, the KV cache and the LoRA slots allow), preempting by recompute when a running
request cannot get a block. ``finish_step`` applies the batch: computed tokens, newly cached
prefix blocks, one sampled token per request whose context is complete, and finished requests.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left, bisect_right
from dataclasses import dataclass

from sluice.sim.block_hash import BlockHasher
from sluice.sim.histogram import E2E_BUCKETS, ITL_BUCKETS, TTFT_BUCKETS, Histogram
from sluice.sim.kv_events import Event
from sluice.sim.kvcache import BlockPool
from sluice.sim.lora import AdapterSlots
from sluice.sim.metrics import EngineMetrics
from sluice.sim.profiles import DEFAULT_PROFILE, CostProfile, EngineConfig, get_profile, with_engine
from sluice.sim.queues import make_queue
from sluice.sim.request import SimRequest
from sluice.sim.sequence import Sequence, Status


class Engine:
    def __init__(
        self, config: EngineConfig, cost: CostProfile, *, model_name: str = "sim-model"
    ) -> None:
        self.config = config
        self.cost = cost
        self.model_name = model_name
        self.kv = BlockPool(
            config.num_gpu_blocks,
            enable_prefix_caching=config.enable_prefix_caching,
            enable_kv_cache_events=config.enable_kv_cache_events,
            block_size=config.block_size,
        )
        # vLLM's engine core hashes each request's blocks with its own seed (PYTHONHASHSEED).
        self.hasher = BlockHasher(
            config.block_size, config.prefix_caching_hash_algo, config.hash_seed
        )
        self.loras = AdapterSlots(config.max_loras)
        self.running: list[Sequence] = []
        self.waiting = make_queue(config.scheduling_policy)
        self._arriving: list[tuple[float, int, Sequence]] = []
        self._by_id: dict[str, Sequence] = {}
        self._batch: list[tuple[Sequence, int]] | None = None
        self._run: _DecodeRun | None = None
        self.busy_until: float | None = None  # when the running step (or decode run) ends
        # Virtual time only: let one start_step() cover many identical decode steps.
        self.fast_forward = False
        self._seq_no = 0
        # Counters and histograms behind /metrics.
        self.prefix_queries = 0
        self.prefix_hits = 0
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.num_preemptions = 0
        self.lora_info_time = 0.0
        self.ttft = Histogram(TTFT_BUCKETS)
        self.itl = Histogram(ITL_BUCKETS)
        self.e2e = Histogram(E2E_BUCKETS)

    @classmethod
    def from_profile(
        cls, name: str = DEFAULT_PROFILE, *, model_name: str = "sim-model", **config: object
    ) -> Engine:
        """An engine of a named profile, some capacity knobs overridden (``max_num_seqs=32``)."""
        profile = get_profile(name)
        return cls(with_engine(profile, **config), profile.cost, model_name=model_name)

    # ---- requests in and out -------------------------------------------------------------

    def add_request(self, request: SimRequest, now: float) -> Sequence:
        """Accept a request at ``now``; it joins the waiting queue after the front-end overhead."""
        if request.request_id in self._by_id:
            raise ValueError(f"duplicate request id {request.request_id!r}")
        total = request.prompt_tokens + request.output_tokens
        if total > self.config.max_model_len:
            raise ValueError(f"{total} tokens exceed max_model_len {self.config.max_model_len}")
        if math.ceil(total / self.config.block_size) > self.config.num_gpu_blocks:
            raise ValueError(f"{total} tokens can never fit in the KV cache")
        if request.lora is not None and self.config.max_loras == 0:
            raise ValueError("LoRA adapters are disabled (max_loras = 0)")
        self._seq_no += 1
        hashes = (
            self.hasher.hashes(request.token_ids, lora=request.lora, cache_salt=request.cache_salt)
            if self.config.enable_prefix_caching
            else ()
        )
        seq = Sequence(
            request,
            submitted_at=now,
            arrival_time=now + self.cost.frontend_s,
            seq_no=self._seq_no,
            block_hashes=hashes,
        )
        self._by_id[request.request_id] = seq
        if self.cost.frontend_s > 0:
            heapq.heappush(self._arriving, (seq.arrival_time, seq.seq_no, seq))
        else:
            self._enqueue(seq)
        return seq

    def abort(self, request_id: str, now: float) -> Sequence | None:
        """Drop a request wherever it is (the client went away), freeing its blocks."""
        seq = self._by_id.pop(request_id, None)
        if seq is None:
            return None
        if seq.status is Status.ARRIVING:
            self._arriving = [entry for entry in self._arriving if entry[2] is not seq]
            heapq.heapify(self._arriving)
        elif seq.status is Status.WAITING:
            self.waiting.remove(seq)
        elif seq.status is Status.RUNNING:
            self.running.remove(seq)
            self._release(seq)
        seq.status, seq.finish_reason, seq.finish_time = Status.FINISHED, "abort", now
        return seq

    def get(self, request_id: str) -> Sequence | None:
        return self._by_id.get(request_id)

    @property
    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    def progress_at(self, now: float) -> dict[str, tuple[int, int]]:
        """(prompt tokens computed beyond its cache hit, output tokens) of each running request
        by `now`, read-only: a decode run's steps that ended by `now` count, though the run
        applies them only when it settles."""
        run = self._run
        ahead = bisect_right(run.ends, now, run.done) - run.done if run is not None else 0
        in_run = {id(seq) for seq in run.seqs} if run is not None else set()
        progress = {}
        for seq in self.running:
            if seq.status is not Status.RUNNING:
                continue
            prompt = seq.request.prompt_tokens
            computed = max(0, min(seq.num_computed, prompt) - (seq.cached_tokens or 0))
            output = seq.num_output + (ahead if id(seq) in in_run else 0)
            progress[seq.request_id] = (computed, min(output, seq.target_output))
        return progress

    @property
    def in_step(self) -> bool:
        return self._batch is not None

    @property
    def batch(self) -> list[tuple[Sequence, int]]:
        """The running step's requests and how many tokens each computes in it."""
        return list(self._batch or [])

    def next_arrival_time(self) -> float | None:
        """When the earliest request still in the front end reaches the waiting queue."""
        return self._arriving[0][0] if self._arriving else None

    # ---- one step --------------------------------------------------------------------------

    def start_step(self, now: float) -> float | None:
        """Schedule a batch at ``now`` and return how long it runs (None: nothing to do)."""
        if self._batch is not None:
            raise RuntimeError("start_step() while a step is running")
        while self._arriving and self._arriving[0][0] <= now:
            self._enqueue(heapq.heappop(self._arriving)[2])
        if not self.running and not self.waiting:
            return None
        budget = self.config.max_num_batched_tokens
        scheduled: dict[Sequence, int] = {}
        preempted = self._schedule_running(scheduled, budget)
        budget -= sum(scheduled.values())
        lora_loads = 0 if preempted else self._schedule_waiting(scheduled, budget, now)
        if not scheduled:
            return None
        self._batch = list(scheduled.items())
        duration = self._duration(self._batch, lora_loads)
        self.busy_until = now + duration
        if self.fast_forward and not preempted and lora_loads == 0 and self._steady(budget):
            self._plan_decode_run(now, duration)
        return self.busy_until - now

    def _schedule_running(self, scheduled: dict[Sequence, int], budget: int) -> bool:
        preempted = False
        i = 0
        block_size = self.config.block_size
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            n = seq.num_tokens - seq.num_computed
            if n > budget:
                n = budget
            end = seq.num_computed + n
            # Most steps are decodes that still fit in the last block: skip the allocator.
            need = (
                0
                if end <= len(seq.blocks) * block_size
                else -(-end // block_size) - len(seq.blocks)
            )
            while need > 0:
                blocks = self.kv.allocate(need)
                if blocks is not None:
                    seq.blocks.extend(blocks)
                    break
                victim = self._victim()
                if self.running.index(victim) < i:
                    i -= 1
                budget += scheduled.pop(victim, 0)
                self._preempt(victim)
                preempted = True
                if victim is seq:
                    break
            if seq.status is Status.RUNNING:
                scheduled[seq] = n
                budget -= n
                i += 1
        return preempted

    def _schedule_waiting(self, scheduled: dict[Sequence, int], budget: int, now: float) -> int:
        lora_loads = 0
        skipped: list[Sequence] = []
        block_size = self.config.block_size
        while self.waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
            seq = self.waiting.pop()
            lora = seq.request.lora
            if lora is not None and not self.loras.can_admit(lora):
                skipped.append(seq)  # vLLM skips it and keeps its place for the next step
                continue
            # The last token is always recomputed: its logits are needed to sample.
            hits = self.kv.longest_prefix(seq.block_hashes, (seq.num_tokens - 1) // block_size)
            computed = len(hits) * block_size
            n = min(seq.num_tokens - computed, budget)
            need = self._blocks_for(computed + n) - len(hits)
            if not self.kv.can_allocate(need, hits):
                skipped.append(seq)  # back in its place, behind the ones skipped before it
                break
            self.kv.touch(hits)
            seq.blocks = hits + (self.kv.allocate(need) or [])
            seq.num_computed = computed
            seq.num_published = len(hits)
            if seq.cached_tokens is None:
                seq.cached_tokens = computed
            self.prefix_queries += seq.num_tokens
            self.prefix_hits += computed
            if lora is not None:
                lora_loads += self.loras.admit(lora)
                self.lora_info_time = now
            seq.status = Status.RUNNING
            self.running.append(seq)
            scheduled[seq] = n
            budget -= n
        self.waiting.push_front(skipped)
        return lora_loads

    def _duration(self, batch: list[tuple[Sequence, int]], lora_loads: int) -> float:
        prefill = decoding = context = 0
        for seq, n in batch:
            if n == 1 and seq.num_output > 0 and seq.num_computed + 1 == seq.num_tokens:
                decoding += 1
            else:
                prefill += n
            context += seq.num_computed + n
        return self._cost(prefill, decoding, context, lora_loads)

    def _cost(self, prefill: int, decoding: int, context: int, lora_loads: int) -> float:
        c = self.cost
        return (
            c.step_overhead_s
            + c.prefill_token_s * prefill
            + c.decode_seq_s * decoding
            + c.context_token_s * context
            + c.lora_load_s * lora_loads
        )

    def finish_step(self, now: float) -> list[Sequence]:
        """Apply the running step at ``now``; return the requests that produced a token."""
        if self._batch is None:
            raise RuntimeError("finish_step() without start_step()")
        self.busy_until = None
        if self._run is not None:
            return self._finish_decode_run()
        batch, self._batch = self._batch, None
        produced: list[Sequence] = []
        any_finished = False
        block_size = self.config.block_size
        running = Status.RUNNING
        gaps: dict[float, int] = {}
        for seq, n in batch:
            if seq.status is not running:
                continue  # aborted while the step ran
            seq.num_computed += n
            if seq.num_published < seq.num_hashes:
                self._publish(seq, block_size)
            if seq.num_computed < seq.num_tokens:
                continue  # a prefill chunk: nothing sampled yet
            seq.num_output += 1
            seq.num_tokens += 1
            self.generation_tokens += 1
            if seq.first_token_time is None:
                seq.first_token_time = now
                self.ttft.observe(now - seq.submitted_at)
                self.prompt_tokens += seq.request.prompt_tokens
            elif seq.last_token_time is not None:
                # Requests decoding in lockstep share one gap: observe it once per distinct value.
                gap = now - seq.last_token_time
                gaps[gap] = gaps.get(gap, 0) + 1
            seq.last_token_time = now
            if seq.num_output >= seq.target_output:
                self._finish(seq, seq.request.finish_reason, now)
                any_finished = True
            produced.append(seq)
        for gap, times in gaps.items():
            self.itl.observe_many(gap, times)
        if any_finished:
            self.running = [s for s in self.running if s.status is Status.RUNNING]
        return produced

    # ---- decode runs (virtual time) ----------------------------------------------------------
    #
    # Once every running request is decoding and nothing can join the batch, consecutive steps
    # differ only in the context they attend: the engine can plan k of them at once, with the
    # same arithmetic (so the same floats) as k single steps. The plan is applied lazily and
    # cut short by settle() when the outside world intervenes (a new request, an abort).

    def _steady(self, budget_left: int) -> bool:
        """Whether the batch just scheduled will repeat unchanged: all running, all decoding,
        and no waiting request could be admitted in the meantime."""
        batch = self._batch
        assert batch is not None
        if len(batch) != len(self.running) or any(
            n != 1 or seq.num_output == 0 for seq, n in batch
        ):
            return False
        return not self.waiting or len(self.running) >= self.config.max_num_seqs or budget_left <= 0

    def _plan_decode_run(self, now: float, first: float) -> None:
        seqs = self.running[:]
        width, block_size = len(seqs), self.config.block_size
        steps = min(s.target_output - s.num_output for s in seqs)
        # How many steps the free blocks can feed without preempting (monotone: bisect).
        lo, hi = 1, steps
        while lo < hi:
            mid = (lo + hi + 1) // 2
            need = sum(
                max(0, -(-(s.num_computed + mid - len(s.blocks) * block_size) // block_size))
                for s in seqs
            )
            lo, hi = (mid, hi) if need <= self.kv.num_free else (lo, mid - 1)
        arrival = self.next_arrival_time()
        context = sum(s.num_computed + 1 for s in seqs)
        ends = [now + first]
        while len(ends) < lo and (arrival is None or ends[-1] < arrival):
            context += width
            ends.append(ends[-1] + self._cost(0, width, context, 0))
        if len(ends) > 1:
            self._run = _DecodeRun(seqs, ends, start=now)
            self.busy_until = ends[-1]

    def settle(self, now: float, *, cut_at: float | None = None) -> None:
        """Bring a decode run up to ``now``: apply the steps that ended, allocate the one in
        progress. With ``cut_at``, something changes then (a request joins the queue, one
        leaves): drop the planned steps that would start at or after it."""
        run = self._run
        if run is None:
            return
        ended = bisect_right(run.ends, now, run.done, len(run.ends) - 1)
        self._advance(run, ended)
        self._allocate_through(run, run.done + 1)
        if cut_at is not None:
            # Step j starts when step j-1 ends; the step in progress always completes.
            keep = max(run.done + 1, bisect_left(run.ends, cut_at, 0, len(run.ends) - 1) + 1)
            del run.ends[keep:]
            self.busy_until = run.ends[-1]

    def _allocate_through(self, run: _DecodeRun, steps: int) -> None:
        """Blocks for the run's first ``steps`` steps, as single steps would have taken them.
        (Which free block goes to which request differs, but output blocks are never cached,
        so only how many are taken from the head of the free queue matters.)"""
        if run.allocated >= steps:
            return
        block_size = self.config.block_size
        ahead = steps - run.done  # tokens each live request computes by then
        for seq in run.seqs:
            if seq.status is Status.RUNNING:
                need = -(-(seq.num_computed + ahead) // block_size) - len(seq.blocks)
                if need > 0:
                    seq.blocks.extend(self.kv.allocate(need) or [])  # planned: they exist
        run.allocated = steps

    def _advance(self, run: _DecodeRun, upto: int) -> None:
        """Apply steps ``run.done .. upto-1`` at once: O(requests + steps), not their product."""
        steps = upto - run.done
        if steps <= 0:
            return
        self._allocate_through(run, upto)
        live = [seq for seq in run.seqs if seq.status is Status.RUNNING]
        ends, first, last = run.ends, run.done, run.ends[upto - 1]
        gaps: dict[float, int] = {}  # the first step's gaps differ per request
        for seq in live:
            if seq.last_token_time is not None:
                gap = ends[first] - seq.last_token_time
                gaps[gap] = gaps.get(gap, 0) + 1
        for gap, times in gaps.items():
            self.itl.observe_many(gap, times)
        for step in range(first + 1, upto):  # later steps: everyone shares the step's length
            self.itl.observe_many(ends[step] - ends[step - 1], len(live))
        self.generation_tokens += steps * len(live)
        for seq in live:
            seq.num_computed += steps
            seq.num_output += steps
            seq.num_tokens += steps
            seq.last_token_time = last
            if seq.num_output >= seq.target_output:  # only ever on the run's last step
                self._finish(seq, seq.request.finish_reason, last)
        run.done = upto

    def _finish_decode_run(self) -> list[Sequence]:
        run = self._run
        assert run is not None
        self._advance(run, len(run.ends))
        self._run = self._batch = None
        self.running = [s for s in self.running if s.status is Status.RUNNING]
        return [s for s in run.seqs if s.finish_reason != "abort"]

    # ---- helpers --------------------------------------------------------------------------

    def _publish(self, seq: Sequence, block_size: int) -> None:
        """Put the prompt blocks this step completed into the prefix-cache index."""
        hashes = seq.block_hashes
        full = min(min(seq.num_computed, seq.request.prompt_tokens) // block_size, len(hashes))
        if not self.kv.enable_kv_cache_events:
            while seq.num_published < full:
                self.kv.cache(seq.blocks[seq.num_published], hashes[seq.num_published])
                seq.num_published += 1
            return
        request = seq.request
        while seq.num_published < full:
            i = seq.num_published
            self.kv.cache(
                seq.blocks[i],
                hashes[i],
                parent=hashes[i - 1] if i else None,
                token_ids=request.token_ids[i * block_size : (i + 1) * block_size],
                lora=request.lora,
                extra_keys=self.hasher.extra_keys(
                    i, lora=request.lora, cache_salt=request.cache_salt
                ),
            )
            seq.num_published += 1

    def _enqueue(self, seq: Sequence) -> None:
        seq.status = Status.WAITING
        self.waiting.push(seq)

    def _blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.config.block_size)

    def _victim(self) -> Sequence:
        if self.config.scheduling_policy == "priority":
            return max(self.running, key=lambda s: (s.request.priority, s.arrival_time, s.seq_no))
        return self.running[-1]

    def _preempt(self, seq: Sequence) -> None:
        """Preemption by recompute: drop the KV, requeue at the front, start over later."""
        self.running.remove(seq)
        self._release(seq)
        seq.num_computed = seq.num_published = 0
        seq.num_preemptions += 1
        self.num_preemptions += 1
        seq.status = Status.WAITING
        self.waiting.push_front([seq])

    def _release(self, seq: Sequence) -> None:
        self.kv.free(seq.blocks)
        seq.blocks = []
        if seq.request.lora is not None:
            self.loras.release(seq.request.lora)

    def _finish(self, seq: Sequence, reason: str, now: float) -> None:
        self._release(seq)
        if seq.request.lora is not None:
            self.lora_info_time = now
        seq.status, seq.finish_reason, seq.finish_time = Status.FINISHED, reason, now
        self.e2e.observe(now - seq.submitted_at)
        self._by_id.pop(seq.request_id, None)

    # ---- KV-cache events ------------------------------------------------------------------

    def take_kv_events(self) -> list[Event]:
        """The KV-cache events since the last call (empty unless enable_kv_cache_events)."""
        return self.kv.take_events()

    def reset_prefix_cache(self) -> bool:
        """vLLM's /reset_prefix_cache: forget every cached block, if none is in use."""
        return self.kv.reset_prefix_cache()

    # ---- observation ----------------------------------------------------------------------

    def metrics(self) -> EngineMetrics:
        """What /metrics shows right now."""
        waiting_loras = {s.request.lora for s in self.waiting if s.request.lora is not None}
        return EngineMetrics(
            model_name=self.model_name,
            num_requests_running=len(self.running),
            num_requests_waiting=len(self.waiting),
            kv_cache_usage_perc=self.kv.usage,
            prefix_cache_queries=self.prefix_queries,
            prefix_cache_hits=self.prefix_hits,
            running_lora_adapters=tuple(sorted(self.loras.running)),
            waiting_lora_adapters=tuple(sorted(waiting_loras)),
            max_lora=self.config.max_loras,
            lora_info_time=self.lora_info_time,
            block_size=self.config.block_size,
            num_gpu_blocks=self.config.num_gpu_blocks,
            time_to_first_token=self.ttft.snapshot(),
            inter_token_latency=self.itl.snapshot(),
            e2e_request_latency=self.e2e.snapshot(),
            prompt_tokens=self.prompt_tokens,
            generation_tokens=self.generation_tokens,
            num_preemptions=self.num_preemptions,
        )


@dataclass(slots=True)
class _DecodeRun:
    seqs: list[Sequence]
    ends: list[float]  # end time of each planned step
    start: float
    done: int = 0  # steps applied so far
    allocated: int = 1  # steps whose blocks are taken (the first by the scheduler)
