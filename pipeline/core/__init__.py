"""The small data model and pure helpers every stage shares: records, label columns, cost, tokens."""
