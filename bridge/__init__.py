"""cellbridge: local TCP/UDP ports bridged through a Quectel GSM module's TCP/IP stack."""

__version__ = "0.1.0"
