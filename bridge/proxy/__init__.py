"""The local side: listeners and the pumps between local sockets and module links."""
