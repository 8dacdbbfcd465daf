"""The fixed prose of the benchmark sections: setup, method, peer tuning and the reading.

Numbers live in the tables and the target verdicts, which `llmd bench report` computes from the
saved results; this prose explains mechanisms and is checked against the recorded run.
"""

from __future__ import annotations

__all__ = ["COMMANDS", "READINGS"]

TOK = "../shared/fixtures/tiny-llama"

COMMANDS = {
    "compare": f"llmd bench compare --tokenizer {TOK} --output-dir bench/results/compare",
    "overhead": f"llmd bench overhead --tokenizer {TOK} --output-dir bench/results/overhead",
    "crosscheck": (f"llmd bench crosscheck --tokenizer {TOK} "
                   "--output-dir bench/results/crosscheck"),
}

COMPARE_SETUP = """\
**Fleet.** {vllm} vLLM-dialect + {sglang} SGLang-dialect `llmd sim` processes, each with
`--kv-cache-blocks {kv_cache_blocks} --block-size {block_size} --max-model-len {max_model_len}
--time-scale {time_scale}` and the tiny-llama tokenizer (the simulator's default latency model:
10 ms + 0.05 ms per uncached prompt token of prefill, 8 ms + 0.1 ms per running sequence per
output token). Every system gets a **fresh fleet** (the simulators are restarted, so every cache
starts empty) and the same saved workload and Poisson arrival schedule (seeded per stage).

**Workload.** inference-perf's `shared_prefix` parameters: {num_groups} groups x
{num_prompts_per_group} prompts, {system_prompt_len}-token system prompt, {question_len}-token
question, {output_len} output tokens (`ignore_eos`), streaming `/v1/completions`, seed {seed}.
Groups interleave in a seeded shuffle. Each stage of the ladder lasts about
{stage_duration_s:g} s (rate x duration requests) and continues through the workload where the
previous stage stopped, so caches warm up along the ladder as in llm-d's own benchmark. The fleet
holds {kv_cache_blocks} x 4 blocks; the distinct shared prefixes need {num_groups} x
{system_prompt_len} / {block_size} blocks: enough room for every prefix once (a router that
partitions the groups can keep them all), far too little for every simulator to hold all of them
(a cache-blind router thrashes).

**Systems.** llmd = Envoy (`llmd gateway`, one worker thread) + `llmd epp` over the fleet
(static endpoints labelled with their engine) with: `default` (llm-d's default profile: queue x2,
kv-cache-utilization x2, prefix-cache x3, max-score picker), `autotune` (the same weights, with
the `approx-prefix-cache-producer`'s `autoTune: true`: llm-d's own parameter that sizes each
endpoint's prefix index from the block size and block count the endpoint reports, instead of
31,250 blocks), `precise` (the same weights with `precise-prefix-cache-producer` feeding the
prefix scorer instead of the approximate producer: an index of the blocks each simulator reports
in its KV events, the prompt tokenized in the EPP with the simulators' tokenizer;
`precise-speculative` adds `speculativeIndexing: true` with `speculativeTTL: 10s`),
`v1-default` (llm-d v1.0's recommended default, `llmd.epp.config.v1_default_config()`:
`approx-prefix-cache-producer` + `inflight-load-producer` + `prefix-cache-affinity-filter` +
`token-load-scorer`, the plugin-default `peakPrefillThroughput` of 15,928 tok/s),
`prefix-only` (prefix-cache scorer),
`load-only` (queue + kv-cache-utilization) and `random` (random picker). `envoy-rr` is the same
Envoy with round robin over the fleet and no EPP (a Kubernetes Service). `sglang-router` 0.3.2
(`cache_aware`, `round_robin`) and `vllm-router` 0.1.17 (`cache_aware`, its prefix-aware policy,
and `kv_aware`, its KV-event policy) are installed by the command into `.venv-peers/<name>` and
started on 127.0.0.1 (`--host` and `--prometheus-host`), with `--log-level warn`.

**KV events.** For `llmd-precise*` every simulator publishes its engine's KV events on an
`ipc://` socket of its own (`llmd.gateway.LocalStack` turns them on when the EPP config has a
precise plugin). For `vllm-router-kv_aware` the two vLLM-dialect simulators publish vLLM's
events with topic `""` on `tcp://[::ffff:127.0.0.1]:<port>` and the router gets
`--kv-event-source <worker url>=tcp://127.0.0.1:<port>` for each, `--kv-event-block-size
{block_size}` and `--kv-event-model {model}`: its SUB sockets connect (so the publisher must
bind: vLLM binds an endpoint containing `::`, and the IPv4-mapped loopback address listens on
loopback only), it reaches neither `tcp://[::1]` nor a topic other than `""`, and it cannot
decode SGLang's events (a batch is rejected: `missing KV event field: lora_name`), so the
SGLang-dialect simulators publish nothing and it routes to them on load alone (see "Precise
prefix-cache routing" below).

**Peer tuning** (what a competent operator sets for four workers; defaults from `peers.md`):
- `--balance-abs-threshold 8` (default 64) with `--balance-rel-threshold 1.5` (default) for both
  routers' `cache_aware`: at 64 the load check never trips on a fleet with a handful of requests
  in flight per worker (peers.md trap; sglang issue #21199). 2, 8, 16 and 64 were tried on this
  fleet at 16 and 32 req/s; 8 gave sglang-router its best hit share and TTFT p90.
- `--cache-threshold 0.3` (default): a shared prefix is ~90% of each prompt, far above it.
- Tree size and eviction interval stay at their defaults: the routers' trees never shrink during
  a run this short, which only makes them stickier, which helps on this workload.
- Everything else (retries, circuit breaker, token bucket, queue size 100, health checks) stays at
  the defaults; no run here comes near those limits.

**Oracle.** The workload's requests are replayed, in the order the ladder sends them, against
{vllm} + {sglang} copies of the simulator's own block pool (`llmd.sim.blocks.BlockPool`: same
blocks, block size, block keys from the same tokenizer and model name, same LRU eviction). The
oracle sees every pool and sends each request to the pool holding the longest cached prefix of it
(a prefix no pool holds goes to the pool with the most room); hits are counted with the
simulator's rule (whole blocks, never the prompt's last token); like the simulators, a finished
request leaves its output's full blocks cached (never matched again on this workload, but they
take room). Requests are replayed one at a time, so running sequences never compete with cached
blocks for room. With enough room for every
prefix (the case here) this is the best any router can do on this fleet: only the first request
of each group misses. The "infinite cache" column is the same bound without any capacity limit.
Hit share is Σ `usage.prompt_tokens_details.cached_tokens` / Σ `usage.prompt_tokens` over a
stage's successful requests, as the simulators report them."""

COMPARE_READING = """\
- **What decides TTFT here: cache hits.** On this fleet what decides TTFT is whether a
  request's 1,024-token prefix is already on the simulator it lands on (a miss costs ~50 ms of
  prefill and 64 more KV blocks). Cache-aware routing (the llmd configs with a prefix scorer,
  sglang-router `cache_aware`) sends a group back to the endpoint that served it while load
  scorers place new groups. The cache-blind systems (`envoy-rr`, `sglang-round_robin`,
  `llmd-random`, `llmd-load-only`) spread every group over all four simulators, whose LRU caches
  then thrash (about a third of the oracle's hits), so their TTFT p90 is the miss cost at low
  rates; because every miss also holds a full prompt's KV blocks, their simulators run out of KV
  room and queue first, and they stop keeping up at a lower rate (the "sustains up to" column).
  Cache-aware routing is what lets the same fleet carry the higher rates.
- **Precise prefix-cache routing (issue 13).** `llmd-precise` matches what each simulator's KV
  events say it holds, evictions included: up to the middle of the ladder it is at 98-100 % of
  the oracle's hit share (the per-stage ratio table), where llmd-default's guess is at 85-95 %.
  Without speculation it falls back at the top of the ladder: a group's next requests arrive
  before the prefill that stores its blocks has run (the engines queue), so the index does not
  yet show the prefix anywhere and the load scorers spread the group. `llmd-precise-speculative`
  (llm-d's `speculativeIndexing`) counts the blocks of a request as held by the endpoint it was
  sent to until its events confirm them (`speculativeTTL` 10 s: longer than a request's wait in
  the engine's queue at the top of the ladder, where llm-d's 2 s default expires first), and
  keeps 97-102 % of the oracle's share at every rate, with the lowest TTFT p90 and the highest
  output tokens/s at llmd-default's top sustained rate. vllm-router `kv_aware` reads vLLM's
  events only (the SGLang-dialect simulators publish nothing it can decode, so half the fleet is
  routed on load alone), and stays at about half the oracle's share.
- **`autoTune` is the setting that matters under eviction.** With the default 31,250-block index
  per endpoint the EPP keeps believing a group's prefix is on an endpoint long after that
  simulator (512 blocks) evicted it, so once caches churn at high rates its prefix scores point
  at empty caches. `llmd-autotune` sizes the index from each endpoint's reported block count, so
  it forgets a prefix about when the simulator does and sends the group where it still is (or
  places it afresh); compare its rows with llmd-default's at the top of the ladder. A competent
  operator sets it whenever the engines report `cache_config_info` (both dialects do).
- **sglang-router `cache_aware` is the strong peer.** Its text radix tree is sticky by group too,
  and its p50 TTFT is a few ms lower than llmd's (no ext_proc hop, Rust). Its p90 is higher than
  llmd-autotune's and the precise configs' through the ladder: with the balance threshold tuned
  to 8, bursts trip its load check, which sends the request to the least-loaded worker and
  records the prefix there, so groups drift across workers and its hit share falls as the rate
  rises; its TTFT p90 and the rate it keeps up with follow that hit share (the tables above).
- **Where llmd-default loses hit share: the top of the ladder.** At the highest rates
  llmd-default's hit share falls below the oracle's (the Targets table gives this run's ratio;
  it has ranged over 79-89 % from run to run). Three causes: the prefix index believes in
  blocks the simulators have evicted (the `autoTune` bullet); llm-d's default weights give the
  load scorers (queue x2 + KV utilization x2) more say than the prefix scorer (x3), so when queues
  form a request goes to a less-loaded endpoint without its prefix, which then evicts other
  groups; and the 2 cores are saturated (four simulators, Envoy, the Python EPP and the load
  generator), so queues form earlier than on a real fleet. `llmd-prefix-only` keeps a higher hit
  share there but piles groups onto busy endpoints, so its TTFT p90 at the top is higher than the
  balanced configs' (and in some runs it stops keeping up earlier): balancing load and prefix is
  the better trade, and the oracle's share, which ignores load, is a bound a router that must
  also balance load approaches but does not reach at saturation.
- **vllm-router `cache_aware` behaves like round robin here.** vllm-router 0.1.17 prepares prefix
  input by calling each worker's `/v1/completions/render` (and `/tokenize`); real vLLM serves
  `render` only with `--enable-scale-out`, and the simulators do not serve it, so the router logs
  `Prefix input preparation unavailable ... reason="render_unavailable"` and falls back to a
  cache-blind choice. That is also its behaviour in front of a default vLLM, so the result is
  reported as measured; with `render` available it would likely land near sglang-router, from
  which it is forked.
- **Throughput follows the offered rate while a system keeps up.** With `ignore_eos` every request
  produces 32 tokens, so output tokens/s differs between systems only by noise until a system
  falls behind; past that point its completions plateau and its TTFT grows by seconds (the
  open-loop queue), which is what the last stages show."""

OVERHEAD_SETUP = """\
Zero-latency simulators (`--time-scale 0`), two vLLM- and two SGLang-dialect, a fresh fleet and
router per system; the client runs a closed loop of streaming `/v1/completions` (shared-prefix
prompts of ~450 tokens, about 2 KiB, 8 output tokens) at concurrency 1 and 64, 3 repeats of 200 and
2,000 requests after a 200-request warm-up, following vllm-router's
`docs/benchmarks/router_overhead.md`. `direct` is the client spreading requests over the four
simulators itself. "added mean" is the system's mean latency minus direct's at the same
concurrency (vllm-router's `mean_minus_direct`); router CPU is user + system time from
`/proc/<pid>/stat` of the routing processes (Envoy + EPP for llmd, Envoy for envoy-rr, the router
process for the peers) over the measured requests, divided per 1,000; peak memory is the sum of
their `VmHWM`. Everything, client included, shares the same 2 cores, so requests/s at concurrency
64 is a whole-machine number. `llmd.bench.overhead.measure_cell` is the reusable measurement."""

OVERHEAD_READING = """\
- **Concurrency 1** measures the latency each hop adds. llmd adds two: Envoy (envoy-rr alone adds
  a fraction of a millisecond) and the ext_proc round trip to the Python EPP, which parses the
  body, hashes the prompt's blocks and scores the endpoints: together 1.5-2 ms, on par with
  vllm-router, whose per-request render/tokenize attempts cost it about as much. sglang-router at
  concurrency 1 is dominated by a ~40 ms stall per request, the signature of Nagle's algorithm
  meeting delayed ACKs on its connection to the worker; at concurrency 64 the stall disappears
  (other requests' segments carry the ACKs), so it is a latency artefact of that router at low
  load, not CPU, and the fastest peer at concurrency 1 is therefore vllm-router.
- **Concurrency 64** is a throughput test of the whole 2-core machine: every CPU-second the router
  uses is taken from the simulators and the client. sglang-router's Rust data path costs roughly
  a third of llmd's CPU per request (Envoy + EPP; the CPU column), so llmd leaves the simulators
  less of the machine; how its added latency compares is the Targets verdict above. The EPP's
  own cost is the subject of `## EPP overhead` (issue 3); this is where llmd loses first as load
  grows.
- Peak memory: Envoy + the Python EPP hold about 1.5x the resident memory of one Rust router."""

CROSSCHECK_SETUP = """\
inference-perf 0.7.0 (installed by the command into `.venv-peers/inference-perf` with Python
3.12) and `llmd bench` each drive a fresh llmd stack (llmd-default over the same fleet as the
comparison) with the same `shared_prefix` parameters: {num_groups} groups x
{num_prompts_per_group} prompts, {system_prompt_len}-token system prompt (inference-perf's
generator cannot exceed the tokenizer's `model_max_length` of 512 tokens, so the prefix is shorter
than in the comparison), {question_len}-token question, {output_len} output tokens with
`ignore_eos`, Poisson arrivals at {rate:g} req/s for {duration_s} s, streaming completions, and
the same local tokenizer ({tokenizer}) in both tools and in the simulators. inference-perf builds
its own random-token prompts, so the texts differ while the lengths match."""

CROSSCHECK_READING = """\
The two clients measure the same stack the same way: TTFT mean and p50 and ITL agree within a
millisecond or so; TTFT p90 of a 240-request stage moves by several milliseconds from run to
run of either tool (a handful of requests that meet a prefill of a new group), which is the
noise this comparison has to be read against. The requests/s and
output tokens/s columns differ by the definition of the window: inference-perf divides by its
stage duration, `llmd bench` by the span from the first request's start to the last request's end
(which includes the last requests' full latency), and the Poisson sample of a short stage has a
few percent fewer or more arrivals than rate x duration."""

READINGS = {
    "compare_setup": COMPARE_SETUP,
    "compare": COMPARE_READING,
    "overhead_setup": OVERHEAD_SETUP,
    "overhead": OVERHEAD_READING,
    "crosscheck_setup": CROSSCHECK_SETUP,
    "crosscheck": CROSSCHECK_READING,
}
