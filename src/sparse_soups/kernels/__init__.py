"""The bottom layer: tensors in, tensors out.

Pruning, averaging, schedules, models, data, training and scoring. Nothing here knows
about the workflow, the results tree or the command line; the methods (`..methods`)
combine these into the steps of each pruning or averaging method.
"""
