"""The local side: each profile's listener, and splices of local and module sockets."""
