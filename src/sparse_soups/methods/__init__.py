"""The middle layer: one module per method family, each owning its workflow steps.

    imp            pretraining, prune-and-retrain (IMP and every SMS ingredient), rewinding
    sms            soups of a phase's ingredients, and their prediction ensemble
    gmp            gradual magnitude pruning, and GMP + SMS
    lottery_pools  Lottery Pools over an IMP chain's tickets
    evaluation     data preparation, corrupted test sets, one model's metrics

Each step takes a `context.Job` and file paths, and writes one file; `record.ModelRecord`
is what it records about the model. The command line (`..cli`) maps commands to steps.
"""
