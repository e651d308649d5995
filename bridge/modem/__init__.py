"""The module: bring-up, stack state, recovery, and its sockets as Twisted transports."""
