"""leaf: LeaF (Learning to Focus) causal attention distillation.

Stage 1 finds confounding tokens by comparing teacher and student input-gradient saliency and
turns them into counterfactual samples (``leaf.detect``); stage 2 distils the teacher into the
student on originals and counterfactuals (``leaf.distill``).
"""

from leaf.models import register_model_scheme

__version__ = "0.1.0"

# testbed:FAMILY/ROLE names a shipped testbed checkpoint wherever a model goes in (leaf.models)
register_model_scheme("testbed", "leaf.testbed.assets:shipped_model")
