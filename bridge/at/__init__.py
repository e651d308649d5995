"""The AT engine: the one owner of the UART (framing, commands, URCs).

Modules: ``framing`` (sans-I/O byte framer), ``commands`` (command objects, factories, typed
results), ``events`` (URC and engine events), ``errors`` (typed failures), ``protocol``
(``ATProtocol``: queue, routing, timeouts, resync), ``datamode`` (transparent sessions),
``ring`` + ``redact`` (safe traffic record).
"""
