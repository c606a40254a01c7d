"""The application layer: one module per command, and what they share
(the stress loop, the runner, the preparation of a recipe)."""
