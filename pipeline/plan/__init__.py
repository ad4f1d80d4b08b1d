"""Planning: policies, prompts and answer schemas, and which (row, policy) pairs need a call."""
