"""The control socket (``[cellbridge] control``) and the commands that use it.

The daemon answers newline-delimited JSON on it (:mod:`bridge.control.protocol`): a status
snapshot read from the running service tree (:mod:`bridge.control.snapshot`), or the live AT
traffic, redacted like the ring. ``cellbridge status`` (:mod:`bridge.control.status`, rendered by
:mod:`bridge.control.render`) and ``cellbridge trace`` (:mod:`bridge.control.trace`) are its
clients (:mod:`bridge.control.client`); :mod:`bridge.control.service` puts the listener in the
tree with the access rules the README states (mode 0660, an optional group).
"""
