"""The pure core of deciding: the bisect strategy, its information bound,
rates and intervals, and the terms of a bisect. No I/O."""
