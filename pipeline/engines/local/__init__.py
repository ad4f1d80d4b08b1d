"""The local engine: one asyncio loop, a reader, a planner, a pool of workers, a shard writer."""
