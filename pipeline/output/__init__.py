"""The output directory: shards, manifest, lock, result store and resume, local or object store."""
