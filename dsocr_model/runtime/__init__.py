"""The runtime layer: one-sequence greedy generation and the batched engine, over the model layer."""
