"""Evaluation, in the order an experiment runs it.

- `judges/`: toxicity judges behind one interface (`ToxicityJudge`), and their quality;
- `probes/`: what detoxification costs in general ability (knowledge probes);
- `fidelity.py`: is a completion in the prompt's language, empty, repetitive;
- `metrics.py`: per-language toxicity figures of one model;
- `stats.py`, `compare.py`: base vs fine-tuned, every figure with its paired bootstrap interval;
- `power.py`: synthetic scores for the gate's error rates and the interval a run can expect
  (the gate itself, which decides on these intervals' bounds, is `mbad.gate`).
"""
