"""A Quectel M95-dialect module simulator on a pty (imports nothing from bridge.at or bridge.modem)."""
