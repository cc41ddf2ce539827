"""Generation with llama.cpp (xllamacpp), run inside the peers' own environment by `make bench`.

Reads a JSON request on stdin: {"gguf", "prompts", "max_new_tokens", "temperature", "top_k",
"top_p", "threads", "parallel", "seed", "repeats"}; writes {"seconds", "tokens", "tokens_per_s",
"completions", ...} as JSON on stdout. All prompts are sent at once to llama.cpp's own server
engine (continuous batching over `parallel` slots); every completion runs the full
`max_new_tokens` (end-of-sequence ignored), as mbad's batched generator does.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor


def main() -> None:
    request = json.load(sys.stdin)
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = request["gguf"]
    params.n_parallel = request["parallel"]
    params.n_ctx = request["parallel"] * 512
    params.cpuparams.n_threads = request["threads"]
    params.cpuparams_batch.n_threads = request["threads"]
    params.warmup = True
    server = xllamacpp.Server(params)

    def complete(index_prompt: tuple[int, str]) -> dict:
        index, prompt = index_prompt
        return server.handle_completions({
            "prompt": prompt, "n_predict": request["max_new_tokens"], "temperature": request["temperature"],
            "top_k": request["top_k"], "top_p": request["top_p"], "ignore_eos": True, "seed": request["seed"] + index,
            "cache_prompt": False,
        })

    complete((0, request["prompts"][0]))  # warm-up
    best, answers = float("inf"), []
    for _ in range(request["repeats"]):
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=request["parallel"]) as pool:
            answers = list(pool.map(complete, enumerate(request["prompts"])))
        best = min(best, time.perf_counter() - started)
    failed = [answer for answer in answers if "usage" not in answer or not answer.get("choices")]
    if failed:
        raise SystemExit(f"llama.cpp answered {len(failed)} of {len(answers)} prompts without a completion: {failed[0]}")
    tokens = sum(answer["usage"]["completion_tokens"] for answer in answers)
    json.dump({"seconds": best, "tokens": tokens, "tokens_per_s": tokens / best, "repeats": request["repeats"],
               "xllamacpp": xllamacpp.__version__, "completions": [answer["choices"][0]["text"] for answer in answers]}, sys.stdout)


if __name__ == "__main__":
    main()
