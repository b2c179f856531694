"""Supervised training and teacher → student distillation.

- ``distill.losses``: the loss registry (ground truth, teacher score, teacher features) and
  their weighted sum.
- ``distill.features``: teacher/student feature pairs as data, captured by forward hooks.
- ``distill.teacher``: checkpoint or CSV teachers and their one-pass output cache.
- ``distill.distiller``: :func:`distill.distiller.distill`, the step hook, pseudo-labels.
- ``distill.trainer``: the training loop both ``edge-iqa train`` and ``edge-iqa distill`` use.
"""
