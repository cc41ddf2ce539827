"""Evaluation, in the order an experiment runs it.

- `judges/`: toxicity judges behind one interface (`ToxicityJudge`), and their quality;
- `probes/`: what detoxification costs in general ability (knowledge probes);
- `metrics.py`: per-language toxicity figures and the base vs fine-tuned comparison.
"""
