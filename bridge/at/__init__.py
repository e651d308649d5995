"""The AT engine: the one owner of the UART (framing, commands, URCs)."""
