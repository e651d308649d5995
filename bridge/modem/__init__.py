"""The module: bring-up, stack state, socket slots and links."""
