"""TLS on module links: the bridge originates TLS for a profile's plaintext app and terminates it
for a module-side server's clients (the module itself has no TLS)."""
