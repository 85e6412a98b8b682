"""leaf: LeaF (Learning to Focus) causal attention distillation.

Stage 1 finds confounding tokens by comparing teacher and student input-gradient saliency and
turns them into counterfactual samples (``leaf.detect``); stage 2 distils the teacher into the
student on originals and counterfactuals (``leaf.distill``).
"""

__version__ = "0.1.0"
