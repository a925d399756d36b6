"""Golden model: timing (cycles), energy, and bit-exact function of PIM command programs."""
