"""DataUsage: the bytes a modem's module carried for us, both ways (M2M SIMs are billed by
volume), as status and metrics show them."""


class DataUsage:
    """Payload bytes written to (``sent``) and read from (``received``) the module's sockets."""

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0
