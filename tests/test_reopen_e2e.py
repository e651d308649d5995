"""``reopen = yes`` end to end: a local app uploads 256 KiB (every AT look-alike in it) through
the bridge to a sink that keeps each connection's bytes apart, and the module socket carrying it
dies halfway: killed silently (the keepalive finds it), +PDP DEACT, a module reboot. The local
connection never sees a reset; a second module socket carries the rest, starting with exactly the
bytes the first one never showed acknowledged, so the sink's two connections add up to the upload.

A killed socket's acked count ends at exactly what the sink received (simulator choice 39), so
after a kill the resend point is exact. +PDP DEACT and a reboot are also tried while bytes
flow: acks are learnt late, so part of the stream is repeated (at most one send window), never
lost. A remote
close still ends the local connection with EOF, and reopens nothing.

A profile without reopen is reset on a dead link as before:
tests/test_keepalive_e2e.py (test_silently_dead_socket_with_data_in_flight_is_reset_on_schedule).
"""

import re

import pytest
import pytest_twisted
from twisted.internet.error import ConnectionDone
from twisted.logger import capturedLogs, formatEvent

from tests.e2e_bed import (Bed, ResetSeen, Sink, Source, connect, ended, salted, server, sha,
                           until)
from tests.test_keepalive_e2e import KEEPALIVE, LATE
from tests.test_recovery_e2e import RecoveryBed

UPLOAD = salted(256 * 1024)
HALF = len(UPLOAD) // 2
WINDOW = 5840  #: the default send_window: the most a reopen may repeat
FIRST_ATTEMPT = 1.0  #: seconds from the loss to the first open attempt
EPSILON = 0.005
REOPEN = "reopen = yes\n"


class KeepaliveReopenBed(Bed):
    """Short keepalive: a killed socket is found dead in about two seconds."""

    modem_keys = KEEPALIVE
    profile_keys = REOPEN


class ModemDownReopenBed(RecoveryBed):
    """Short modem recovery; a keepalive too slow to end a socket within the test, so only the
    modem fault does."""

    modem_keys = "keepalive_first = 60\nkeepalive_interval = 60\n"
    profile_keys = REOPEN


async def recovery_bed(tmp_path, remote):
    return await ModemDownReopenBed.start(tmp_path, remote, act_delay=0.05, deact_delay=0.05)


async def upload(bed, sink) -> ResetSeen:
    """A local client that wrote UPLOAD and half-closed, once the sink has half of it."""
    client = await connect(bed.port, ResetSeen())
    client.transport.write(UPLOAD)
    client.transport.loseWriteConnection()
    await until(lambda: sink.connections and len(sink.connections[0].received) >= HALF,
                what="half the upload at the sink")
    assert not client.closed.called
    return client


def carrying_slot(bed) -> int:
    [link] = bed.admission.sockets
    return link.slot


async def upload_completes(bed, sink, client) -> tuple:
    """The sink's two connections, once the local client saw its clean EOF (not a reset) after
    the bridge carried the whole upload."""
    await until(lambda: sum(len(c.received) for c in sink.connections) >= len(UPLOAD),
                what="the whole upload at the sink")
    await ended(client, "the bridge to end the local connection after the upload")
    assert client.reason.check(ConnectionDone), f"the local app saw {client.reason.value!r}"
    assert client.received == b""
    assert len(sink.connections) == 2
    return tuple(bytes(c.received) for c in sink.connections)


def reopened_lines(events) -> list:
    """The "reopened" log lines: (slot, cause, bytes sent again, bytes that were waiting)."""
    found = []
    for event in events:
        text = formatEvent(event)
        match = re.fullmatch(r"\[profile:p\] link to 127\.0\.0\.1:\d+ reopened on module socket "
                             r"(\d) after [\d.]+ s \((\w+): .*\); (\d+) unacknowledged bytes "
                             r"sent again, then (\d+) that were waiting", text)
        if match:
            found.append((int(match[1]), match[2], int(match[3]), int(match[4])))
    return found


def reopens(bed) -> int:
    """``link_reopened`` counted, whatever the cause."""
    return sum(count for (name, _), count in bed.modem.counters.snapshot().items()
               if name == "link_reopened")


def assert_reopened_once(bed, events, cause: str, second: bytes) -> int:
    """One reopen, counted and logged with ``cause``; the bytes it logs as sent again (at most
    the send window) and those that waited begin the second connection. Returns the module socket it logs."""
    assert bed.modem.counters.get("link_reopened", cause=cause) == reopens(bed) == 1
    [(slot, logged_cause, resent, waiting)] = reopened_lines(events)
    assert logged_cause == cause and resent <= WINDOW and 0 < resent + waiting <= len(second)
    assert bed.modem.counters.get("link_reopen_timeout") == 0
    return slot


def commands(bed, command: str) -> list:
    """(time, command line) of every ``command`` the simulator got, in order."""
    return [(e["t"], e["cmd"]) for e in bed.sim.command_log.entries()
            if e["cmd"].startswith(command)]


async def learnt_final_count(bed, sink, slot: int) -> int:
    """After a kill: wait until the simulator's socket has delivered everything its kernel took,
    the sink has read it all, and the bridge's AT+QISACK shows that very count acked, with no
    command on the wire (none can change what the bridge knows any more)."""
    conn = sink.connections[0]

    def known_acked():
        [link] = bed.admission.stats()["links"]
        return link["sent"] - link["unacked"]

    def settled():
        module = bed.module_sockets()[str(slot)]
        return (module["dead"] and module["acked"] == module["handed"] == len(conn.received)
                == known_acked() and not bed.modem.protocol.busy)

    await until(settled, what="the bridge to learn the killed socket's final acked count")
    return len(conn.received)


@pytest_twisted.ensureDeferred
async def test_a_silently_killed_socket_is_reopened_and_the_upload_completes(tmp_path):
    sink = server(Sink)
    with capturedLogs() as events:
        async with await KeepaliveReopenBed.start(tmp_path, sink) as bed:
            client = await upload(bed, sink)
            slot = carrying_slot(bed)
            bed.sim.kill(slot)

            first, second = await upload_completes(bed, sink, client)
            assert sha(first + second) == sha(UPLOAD)
            assert bed.modem.counters.get("link_dead", cause="no_ack_progress") == 1
            new_slot = assert_reopened_once(bed, events, "no_ack_progress", second)
            closed_at = commands(bed, f"AT+QICLOSE={slot}")[0][0]
            [(opened_at, _), (reopened_at, reopen)] = commands(bed, "AT+QIOPEN")
            assert opened_at < closed_at < reopened_at
            assert reopen.startswith(f"AT+QIOPEN={new_slot},")
            gap = reopened_at - closed_at
            assert FIRST_ATTEMPT - EPSILON <= gap < FIRST_ATTEMPT + LATE, gap


@pytest.mark.parametrize("fault, counter", [("pdp_deact", "pdp_lost"),
                                            ("reboot", "module_reset")])
@pytest_twisted.ensureDeferred
async def test_a_link_is_reopened_after_a_modem_fault_from_the_first_unacknowledged_byte(
        tmp_path, fault, counter):
    """The socket is killed halfway and the bridge learns its final acked count before the
    fault: the second connection starts exactly where the first one's bytes end."""
    sink = server(Sink)
    with capturedLogs() as events:
        async with await recovery_bed(tmp_path, sink) as bed:
            client = await upload(bed, sink)
            slot = carrying_slot(bed)
            bed.sim.kill(slot)
            delivered = await learnt_final_count(bed, sink, slot)
            getattr(bed.sim, fault)()

            first, second = await upload_completes(bed, sink, client)
            assert len(first) == delivered
            assert sha(first + second) == sha(UPLOAD)
            assert bed.modem.counters.get(counter) == 1
            assert bed.modem.counters.get("link_dead", cause="no_ack_progress") == 0
            assert_reopened_once(bed, events, "modem_down", second)
            assert len(commands(bed, "AT+QIOPEN")) == 2


@pytest.mark.parametrize("fault", ["pdp_deact", "reboot"])
@pytest_twisted.ensureDeferred
async def test_a_modem_fault_while_bytes_flow_loses_nothing_and_repeats_at_most_a_window(
        tmp_path, fault):
    """Mid-transfer, an AT+QISEND is usually on the wire: a reboot fails it at ``RDY`` (the
    recovery does not wait for its 20 s limit)."""
    sink = server(Sink)
    with capturedLogs() as events:
        async with await recovery_bed(tmp_path, sink) as bed:
            client = await upload(bed, sink)
            getattr(bed.sim, fault)()

            first, second = await upload_completes(bed, sink, client)
            resumed_at = len(UPLOAD) - len(second)
            assert first == UPLOAD[:len(first)] and second == UPLOAD[resumed_at:]
            assert 0 <= len(first) - resumed_at <= WINDOW, (len(first), resumed_at)
            assert_reopened_once(bed, events, "modem_down", second)


@pytest_twisted.ensureDeferred
async def test_a_remote_close_still_ends_the_local_connection_with_eof(tmp_path):
    reply = salted(64 * 1024, seed=7)
    async with await KeepaliveReopenBed.start(tmp_path, server(Source, reply)) as bed:
        client = await connect(bed.port, ResetSeen())
        assert await ended(client, "the remote's close to reach the local app") == reply
        assert client.reason.check(ConnectionDone), f"the local app saw {client.reason.value!r}"
        await until(bed.idle, what="the link and its module socket to be gone")
        assert len(commands(bed, "AT+QIOPEN")) == 1
        assert reopens(bed) == 0
