"""LoRA fine-tuning, resumable: supervised on neutral sentences (the paper's X-FT, `sft`), or by
preference (DPO, `dpo`), both through one loop.

- `loop`: the training loop every method runs (accelerate; LoRA/QLoRA; checkpoints; the saved adapter)
- `data`: tokenising, batching and sharding the batches between processes
- `checkpoints`: the resumable state on disk, and its durable copy in the artifact store
- `launch`: one training process per GPU (`python -m mbad.train` is what each process runs)
- `sft`, `dpo`: the methods, each an objective for the loop
- `methods`: the table of methods by name (`METHODS`), read by the training step, the launched
  processes and the model card; `names` lists its names for config validation without torch
"""
