"""The system model: a whole model's decode on HBM-PIM stacks, per generated token
(docs/system.md)."""
