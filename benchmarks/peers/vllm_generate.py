"""Generation with vLLM's CPU build, run inside the peers' own environment by `make bench`.

Reads a JSON request on stdin: {"model", "adapter" (a peft LoRA directory, or null), "prompts",
"max_new_tokens", "temperature", "top_k", "top_p", "threads", "seed", "repeats",
"max_num_seqs", "enforce_eager", "single_process"}; writes {"seconds", "tokens", "tokens_per_s",
"completions", "load_seconds", ...} as JSON on stdout. All prompts go to one `LLM.generate` call (vLLM's
continuous batching over `max_num_seqs` sequences); every completion runs the full
`max_new_tokens` (end-of-sequence ignored), as mbad's batched generator does. With an adapter,
the engine serves it as a LoRA request on the base model (unmerged), as mbad evaluates one.
"""

from __future__ import annotations

import json
import os
import sys
import time


def cpu_binding(threads: int) -> str:
    """vLLM's CPU worker binds one OpenMP thread per core it is given: the first `threads` cores
    this process may run on, as "a-b" ranges joined by commas."""
    cores = sorted(os.sched_getaffinity(0))[:threads]
    ranges, start = [], cores[0]
    for previous, core in zip(cores, cores[1:] + [None], strict=True):
        if core != previous + 1:
            ranges.append(f"{start}-{previous}")
            start = core
    return ",".join(ranges)


def main() -> None:
    request = json.load(sys.stdin)
    # vLLM logs to standard output, its engine process too: the answer gets the real one alone.
    answer = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", cpu_binding(request["threads"]))
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB; the bench's sequences need a few MB
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    if request.get("single_process"):  # the engine core in this process, its worker in the engine's
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    import vllm
    from vllm.lora.request import LoRARequest

    started = time.perf_counter()
    options = {"enable_lora": True, "max_lora_rank": request["lora_rank"], "max_loras": 1} if request["adapter"] else {}
    engine = vllm.LLM(model=request["model"], max_num_seqs=request["max_num_seqs"], max_model_len=512, seed=request["seed"],
                      enforce_eager=request["enforce_eager"], **options,
                      **({"distributed_executor_backend": "uni"} if request.get("single_process") else {}))
    load_seconds = time.perf_counter() - started
    sampling = vllm.SamplingParams(n=1, temperature=request["temperature"], top_k=request["top_k"], top_p=request["top_p"],
                                   max_tokens=request["max_new_tokens"], ignore_eos=True)
    lora = LoRARequest("bench-adapter", 1, request["adapter"]) if request["adapter"] else None
    engine.generate(request["prompts"][:1], sampling, lora_request=lora, use_tqdm=False)  # warm-up (and the adapter's load)
    best, outputs = float("inf"), []
    for _ in range(request["repeats"]):
        started = time.perf_counter()
        outputs = engine.generate(request["prompts"], sampling, lora_request=lora, use_tqdm=False)
        best = min(best, time.perf_counter() - started)
    tokens = sum(len(output.outputs[0].token_ids) for output in outputs)
    json.dump({"seconds": best, "tokens": tokens, "tokens_per_s": tokens / best, "repeats": request["repeats"],
               "load_seconds": load_seconds, "vllm": vllm.__version__, "dtype": str(engine.llm_engine.model_config.dtype),
               "cpu_binding": os.environ["VLLM_CPU_OMP_THREADS_BIND"],
               "completions": [output.outputs[0].text for output in outputs]}, answer)
    answer.flush()


if __name__ == "__main__":
    main()
