"""`moderate run --engine ray`: the same run spread over a Ray cluster (docs/ray.md).

    leases.py    the cluster-wide limiter's rules: capacity leased in chunks (pure)
    throttle.py  a worker process's throttle, spending leased capacity
    ledger.py    per-shard result stores in the output directory; billing merged from them
    labeller.py  the actor that labels whole shards with the local engine's `Run`
    engine.py    the driver: plan shards, run them on Ray Data, write manifest and reports
    rayside.py   everything that imports Ray (the limiter actor, the dataset)
"""
