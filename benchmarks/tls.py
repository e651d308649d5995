"""TLS over a module link against plaintext on the same bridge: bulk goodput and the handshake.

Each condition starts one ``cellbridge run`` process with ``port = sim`` and three tcp profiles
side by side, to far ends in this process: ``plain``; ``tls`` (``tls = yes``, ``tls_ca`` and
``tls_hostname = localhost``) to a server with trustme's default ECDSA certificate; ``tls-rsa``
the same with an RSA-2048 CA and certificate. Certificates are made at run time (trustme, in the
test extras) in a temp dir. The TLS servers are Python ``ssl`` over memory BIOs, so they count
what crosses the wire: the handshake's bytes each way, and the records of the bulk data.

uart   --baud 115200, radio unlimited
radio  GPRS-like: 26.8 kbit/s up, 53.6 kbit/s down, RTT 700 ms, --baud 115200

Bulk, each condition: 256 KiB uplink (a local client sends, the far end sinks) and downlink (the
far end sends, a local client receives), through ``plain`` then through ``tls``. Goodput counts the
bytes after the first arrival at the receiving end, from the first to the last arrival, so the
connection set-up and the handshake are not counted. TLS payload arrives a whole record (up to
16 KiB) at a time, so its first and last arrivals fall on record ends, which fall anywhere in a
1460-byte radio segment: under 1 % of uncertainty at 256 KiB, a few % at --quick's 64 KiB.
Printed: plaintext B/s, TLS B/s, their ratio (target >= 0.95), and the TLS stream's wire bytes per
payload byte, records and payload bytes per record.

Handshake, radio only (median of 3 connections per profile): the chain's size (DER bytes of the
certificates the server sends), the handshake's bytes each way (the ClientHello apart; the
server's NewSessionTickets included), the negotiated version and cipher (server side), and, in
seconds and in round trips (seconds / 0.7): local connect -> the far end's TCP accept; accept ->
the server's handshake done, which includes the module's connect (the simulator answers CONNECT OK
one RTT after the accept) and ends one client Finished's trip (RTT/2 and ~80 bytes) after the
bridge had the link secured; and what the app sees: local connect -> the echo of one byte sent
right after connecting, and how much later that is than through ``plain``.

Usage: python benchmarks/tls.py [--quick] [--only uart|radio]
(--quick: 64 KiB transfers and one connection per handshake figure; about 2 minutes instead of 6)
"""

import argparse
import collections
import os
import socket
import ssl
import statistics
import tempfile
import time

import trustme

from bridge_process import BridgeProcess, free_port, sim_config
from streams import (RADIO_DOWN_BPS, RADIO_RTT_MS, RADIO_SHAPING, RADIO_UP_BPS, UART_SHAPING,
                     await_streams, downlink, echo, listener, serve_once, uplink)

TARGET = 0.95
RTT = RADIO_RTT_MS / 1000
HOSTNAME = "localhost"
ECHO_TIMEOUT = 60.0


class Records:
    """The TLS records in one direction of a byte stream, counted from their 5-byte headers."""

    def __init__(self):
        self.bytes = 0
        self.count = 0
        self.first = None  # the first record's size, header included
        self._header = b""
        self._body_left = 0

    def feed(self, data):
        self.bytes += len(data)
        view = memoryview(data)
        while view:
            if self._body_left:
                taken = min(self._body_left, len(view))
                self._body_left -= taken
                view = view[taken:]
                continue
            wanted = 5 - len(self._header)
            self._header += bytes(view[:wanted])
            view = view[wanted:]
            if len(self._header) == 5:
                self._body_left = int.from_bytes(self._header[3:5], "big")
                self._header = b""
                self.count += 1
                if self.first is None:
                    self.first = 5 + self._body_left


class ServerTLS:
    """The server end of TLS on one accepted socket, over memory BIOs so that it sees the wire:
    ``received`` and ``sent`` count its bytes and records, ``handshake_in``/``_out`` are their
    counts once the handshake was done."""

    def __init__(self, sock, context):
        self.sock = sock
        self.wire_in, self.wire_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.wire_in, self.wire_out, server_side=True)
        self.received, self.sent = Records(), Records()
        self.handshake_in = self.handshake_out = None

    def _flush(self):
        data = self.wire_out.read()
        if data:
            self.sent.feed(data)
            self.sock.sendall(data)

    def _fill(self):
        """Read one whole record, so that the handshake's count ends with its last record even
        when application data follows in the same segment."""
        header = self._read_exactly(5)
        body = None if header is None else self._read_exactly(int.from_bytes(header[3:], "big"))
        if body is None:
            self.wire_in.write_eof()
            return
        self.received.feed(header + body)
        self.wire_in.write(header + body)

    def _read_exactly(self, size):
        """``size`` bytes, or None at EOF."""
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def _complete(self, operation, *args):
        while True:
            try:
                result = operation(*args)
            except ssl.SSLWantReadError:
                self._flush()
                self._fill()
            else:
                self._flush()
                return result

    def handshake(self):
        self._complete(self.tls.do_handshake)
        self.handshake_in = (self.received.bytes, self.received.count)
        self.handshake_out = (self.sent.bytes, self.sent.count)

    def recv(self, size):
        try:
            return self._complete(self.tls.read, size)
        except ssl.SSLZeroReturnError:  # close_notify
            return b""

    def sendall(self, data):
        view = memoryview(data)
        while view:
            view = view[self._complete(self.tls.write, view):]


class Accepted:
    """One connection a far end accepted: when, and its TLS end (None for plaintext)."""

    def __init__(self, sock):
        self.sock = sock
        self.at = time.monotonic()
        self.tls = None
        self.secured = None  # when the server's handshake was done


class FarEnd:
    """The far end of one profile: a loopback listener, plaintext or a TLS server presenting
    ``cert``. It keeps every connection open: closing a TLS one without close_notify would be a
    truncation, which the bridge answers by resetting the local client."""

    def __init__(self, cert=None):
        self.sock = listener()
        self.port = self.sock.getsockname()[1]
        self.context = None
        if cert is not None:
            self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            cert.configure_cert(self.context)
        self.accepted = []

    def accept(self, sock):
        """The next connection, as the stream to read and write (after its handshake)."""
        record = Accepted(sock)
        self.accepted.append(record)
        if self.context is None:
            return sock
        record.tls = ServerTLS(sock, self.context)
        record.tls.handshake()
        record.secured = time.monotonic()
        return record.tls


class Chain:
    """A CA (in ``tmp``, for the bridge's tls_ca) and the certificate it issued for HOSTNAME."""

    def __init__(self, tmp, label, key_type):
        self.label = label
        ca = trustme.CA(key_type=key_type)
        self.cert = ca.issue_cert(HOSTNAME, key_type=key_type)
        self.ca_file = os.path.join(tmp, f"{key_type.name.lower()}-ca.pem")
        ca.cert_pem.write_to_path(self.ca_file)
        self.size = sum(len(ssl.PEM_cert_to_DER_cert(pem.bytes().decode()))
                        for pem in self.cert.cert_chain_pems)


class Bridge(BridgeProcess):
    """One ``cellbridge run`` process with the profiles ``plain``, ``tls`` and ``tls-rsa``."""

    def __init__(self, tmp, sim_args):
        self.chains = {"tls": Chain(tmp, "ECDSA", trustme.KeyType.ECDSA),
                       "tls-rsa": Chain(tmp, "RSA-2048", trustme.KeyType.RSA)}
        self.far_ends = {"plain": FarEnd()}
        self.ports = {"plain": free_port()}
        profiles = {"plain": {"listen": f"tcp:{self.ports['plain']}",
                              "remote": f"tcp:127.0.0.1:{self.far_ends['plain'].port}"}}
        for name, chain in self.chains.items():
            self.far_ends[name] = FarEnd(chain.cert)
            self.ports[name] = free_port()
            profiles[name] = {"listen": f"tcp:{self.ports[name]}",
                              "remote": f"tcp:127.0.0.1:{self.far_ends[name].port}",
                              "tls": "yes", "tls_ca": chain.ca_file, "tls_hostname": HOSTNAME}
        super().__init__(tmp, sim_config(tmp, sim_args, profiles))

    def transfer(self, start, profile, size):
        """One bulk stream (``start`` is streams.uplink or streams.downlink) through ``profile``;
        -> (its Arrivals, the far end's Accepted)."""
        far_end = self.far_ends[profile]
        arrivals = start(self.ports[profile], far_end.sock, size, far_end.accept)
        await_streams(self, [(arrivals, size)])
        arrivals.client.close()
        return arrivals, far_end.accepted[-1]

    def echo(self, profile):
        """Local connect, one byte out, its echo back; -> Echo."""
        far_end = self.far_ends[profile]
        serve_once(far_end.sock, lambda sock: echo(far_end.accept(sock)))
        connected = time.monotonic()
        with socket.create_connection(("127.0.0.1", self.ports[profile]),
                                      timeout=ECHO_TIMEOUT) as client:
            client.sendall(b"x")
            if client.recv(1) != b"x":
                raise SystemExit(f"{profile}: no echo\n" + "".join(self.log[-20:]))
            echoed = time.monotonic()
        accepted = far_end.accepted[-1]
        return Echo(echoed - connected, accepted.at - connected,
                    accepted.secured - accepted.at if accepted.tls else None, accepted.tls)


Echo = collections.namedtuple("Echo", "seconds to_accept handshake tls")
Echo.__doc__ = """One echo: local connect -> echo, local connect -> the far end's accept, accept
-> the server's handshake done (None for plaintext), and the server's ServerTLS (or None)."""


def wire_figures(arrivals, accepted, direction):
    """The TLS stream's wire bytes per payload byte, records, and payload bytes per record."""
    records = accepted.tls.received if direction == "uplink" else accepted.tls.sent
    in_handshake = accepted.tls.handshake_in if direction == "uplink" else accepted.tls.handshake_out
    wire, count = records.bytes - in_handshake[0], records.count - in_handshake[1]
    return f"{wire / arrivals.total:7.4f} {count:8d} {arrivals.total / max(count, 1):9.0f}"


def bulk(bridge, size):
    print(f"  {'':<9}{'plaintext':>11}{'TLS':>9}{'ratio':>7}{'target':>8}  verdict"
          f"{'wire/payload':>14}{'records':>8}{'B/record':>10}")
    verdicts = []
    for direction, start in (("uplink", uplink), ("downlink", downlink)):
        plain, _ = bridge.transfer(start, "plain", size)
        secured, accepted = bridge.transfer(start, "tls", size)
        ratio = secured.goodput() / plain.goodput()
        verdict = "PASS" if ratio >= TARGET else "FAIL"
        verdicts.append(verdict)
        print(f"  {direction:<9}{plain.goodput():9.0f}  {secured.goodput():7.0f}  {ratio:5.3f}"
              f"  >={TARGET}  {verdict:<6}  {wire_figures(secured, accepted, direction)}",
              flush=True)
    tls = accepted.tls.tls
    version, cipher = tls.version(), tls.cipher()[0]
    print(f"  (B/s from first to last arrival; {size // 1024} KiB each; TLS: {version} {cipher})")
    return verdicts


def seconds(value):
    return f"{value:5.2f} s ({value / RTT:3.1f} RTT)"


def handshakes(bridge, repeats):
    echoes = {profile: [bridge.echo(profile) for _ in range(repeats)]
              for profile in ("plain", "tls", "tls-rsa")}
    print(f"  {'handshake bytes':<16}{'chain':>6}{'ClientHello':>13}{'all up':>8}{'all down':>10}"
          f"  negotiated (server side)")
    for profile, chain in bridge.chains.items():
        tls = echoes[profile][-1].tls
        print(f"  {chain.label:<16}{chain.size:6d}{tls.received.first:13d}"
              f"{tls.handshake_in[0]:8d}{tls.handshake_out[0]:10d}"
              f"  {tls.tls.version()} {tls.tls.cipher()[0]}")
    print(f"  {'handshake times':<16}{'connect->accept':>17}{'accept->handshake done':>25}"
          f"{'connect->echo':>19}{'echo: TLS - plain':>21}   (median of {repeats})")
    plain = statistics.median(run.seconds for run in echoes["plain"])
    labels = {"plain": "plaintext", **{name: chain.label for name, chain in bridge.chains.items()}}
    for profile, runs in echoes.items():
        to_accept = statistics.median(run.to_accept for run in runs)
        echoed = statistics.median(run.seconds for run in runs)
        handshake = extra = ""
        if profile != "plain":
            handshake = seconds(statistics.median(run.handshake for run in runs))
            extra = seconds(echoed - plain)
        print(f"  {labels[profile]:<16}{to_accept:15.2f} s{handshake:>25}{seconds(echoed):>19}"
              f"{extra:>21}".rstrip(), flush=True)
    print("  (the simulator connects to the far end at AT+QIOPEN and answers CONNECT OK one RTT "
          "later,\n   so accept -> handshake done includes the module's TCP connect)")


def condition(title, sim_args, size, repeats):
    print(title, flush=True)
    with tempfile.TemporaryDirectory(prefix="cellbridge-bench-") as tmp:
        bridge = Bridge(tmp, sim_args)
        try:
            verdicts = bulk(bridge, size)
            if repeats:
                handshakes(bridge, repeats)
            return verdicts
        finally:
            bridge.stop()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 KiB transfers, one handshake each")
    parser.add_argument("--only", choices=("uart", "radio"), help="run one condition only")
    args = parser.parse_args(argv)
    size, repeats = (64 * 1024, 1) if args.quick else (256 * 1024, 3)
    verdicts = []
    if args.only in (None, "uart"):
        verdicts += condition("uart: --baud 115200, radio unlimited", UART_SHAPING, size, 0)
    if args.only in (None, "radio"):
        verdicts += condition(f"radio: {RADIO_UP_BPS} bit/s up, {RADIO_DOWN_BPS} bit/s down, RTT "
                              f"{RADIO_RTT_MS} ms, --baud 115200", RADIO_SHAPING, size, repeats)
    print("all PASS" if all(v == "PASS" for v in verdicts) else "some FAIL")


if __name__ == "__main__":
    main()
