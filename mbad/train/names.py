"""The names of the training methods, which a config's `train.method` and a sweep's `methods`
may take. They are the keys of `mbad.train.methods.METHODS` (a unit test keeps the two equal),
listed here apart so that `mbad.config` validates them without importing the training code."""

METHOD_NAMES = ("sft", "dpo")
