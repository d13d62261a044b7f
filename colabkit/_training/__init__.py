"""Training on colabkit: a resumable run around the user's own loop, and its helpers.

    run.py          Run: folders, checkpoints (epoch end, every N minutes, on interrupt), resume
    data.py         ResumableSampler, per-sample seeds for exact augmentation
    microbatch.py   MicroBatcher: out-of-memory back-off that keeps the optimizer's batch
    distributed.py  torchrun / DDP set-up, all-reduce of metrics, rank-0 decisions
    early_stop.py   EarlyStopping: patience on a monitored metric, as plain state
    metrics.py      metrics.csv (append without duplicates), TensorBoard, loss-curve PNG
    config.py       config.json and the explanation of configuration changes
"""
