"""Keepalive end to end: local sockets -> bridge -> pty -> simulator -> loopback echo.

A socket the simulator kills silently (no acks, no URC) is found dead by the AT+QISACK schedule, an
idle one by the probe it then sends, and one whose CLOSED URC was lost by AT+QISTATE. Each time the
local client is reset (not EOF) and the next connection works. The schedule is checked against the
simulator's time.monotonic()-stamped command log. Wall clock only bounds the waits.
"""

import pytest_twisted

from tests.e2e_bed import (Bed, Echo, connect, echo_works, open_link, reset_not_eof, salted,
                           server, sha, until)

FIRST, INTERVAL, RETRIES = 0.5, 0.5, 3
#: How late a check may reach the simulator: reactor turn-around, and the UART behind one bulk
#: command of another link's transfer. Generous; the lower bounds are exact.
LATE = 0.3
#: Float noise between the bridge's clock and the simulator's stamps (both in this process).
EPSILON = 0.005
KEEPALIVE = (f"keepalive_first = {FIRST}\nkeepalive_interval = {INTERVAL}\n"
             f"keepalive_retries = {RETRIES}\n")
DEADLINE = FIRST + INTERVAL * RETRIES


class KeepaliveBed(Bed):
    modem_keys = KEEPALIVE

    def log(self) -> list:
        return self.sim.command_log.entries()

    def times(self, command: str, after: float = 0.0) -> list:
        return [e["t"] for e in self.log() if e["cmd"] == command and e["t"] > after]

    def last_send(self, slot: int) -> float:
        return [e["t"] for e in self.log() if e["cmd"].startswith(f"AT+QISEND={slot},")][-1]

    def acks_settled(self, slot: int) -> bool:
        """The last AT+QISACK=slot answer said all is acked (a link learns from every answer), so
        no keepalive schedule runs on it, and no command is on the wire."""
        return (not self.modem.protocol.busy and self.times(f"AT+QISACK={slot}")
                and any(link["slot"] == slot and link["sent"] and not link["unacked"]
                        for link in self.admission.stats()["links"]))


class ProbeBed(KeepaliveBed):
    keepalive_idle = 1.0
    modem_keys = KEEPALIVE + f"keepalive_idle = {keepalive_idle}\n"
    profile_keys = "probe = \\n\n"


class StateCheckBed(KeepaliveBed):
    """No probe: idle links are checked with AT+QISTATE (after the test's mute is over)."""

    keepalive_idle = 1.5
    modem_keys = KEEPALIVE + f"keepalive_idle = {keepalive_idle}\n"


def assert_schedule(bed, slot: int, t0: float):
    """AT+QISACK=slot at t0 + FIRST + k * INTERVAL for k = 0..RETRIES, then AT+QICLOSE=slot."""
    offsets = [t - t0 for t in bed.times(f"AT+QISACK={slot}", after=t0)]
    assert len(offsets) == RETRIES + 1, offsets
    for k, offset in enumerate(offsets):
        due = FIRST + k * INTERVAL
        assert due - EPSILON <= offset < due + LATE, (k, offsets)
    closed = [t - t0 for t in bed.times(f"AT+QICLOSE={slot}", after=t0)]
    assert len(closed) == 1 and offsets[-1] <= closed[0] < DEADLINE + LATE, (offsets, closed)


async def dead_link_ends(bed, client, bound: float):
    """The local client is reset and the module told to close socket 0 (bounded waits)."""
    await until(lambda: client.closed.called, timeout=bound + 10, what="the local reset")
    await reset_not_eof(client)
    await until(lambda: "AT+QICLOSE=0" in [e["cmd"] for e in bed.log()], what="AT+QICLOSE=0")


@pytest_twisted.ensureDeferred
async def test_silently_dead_socket_with_data_in_flight_is_reset_on_schedule(tmp_path):
    echo = server(Echo)
    async with await KeepaliveBed.start(tmp_path, echo) as bed:
        doomed = await open_link(bed)
        other = await connect(bed.port)
        other.transport.write(b"hello")
        await until(lambda: bytes(other.received) == b"hello", what="the second link's echo")
        assert sorted(link.slot for link in bed.admission.sockets) == [0, 1]
        await until(lambda: bed.acks_settled(0), what="the first schedule to end")

        bed.sim.kill(0)
        doomed.transport.write(b"lost in flight")
        payload = salted(128 * 1024, seed=11)
        other.transport.write(payload)  # a transfer on the other link, meanwhile

        await dead_link_ends(bed, doomed, DEADLINE)
        assert_schedule(bed, 0, bed.last_send(0))
        assert bed.modem.counters.get("link_dead", cause="no_ack_progress") == 1
        await until(lambda: len(other.received) >= 5 + len(payload), what="the other transfer")
        assert sha(echo.connections[1].received) == sha(b"hello" + payload)
        assert sha(other.received) == sha(b"hello" + payload)
        assert echo.connections[0].received == b"before"  # the killed socket delivered nothing
        other.transport.loseConnection()
        await echo_works(bed, b"next")


@pytest_twisted.ensureDeferred
async def test_idle_link_with_a_probe_is_found_dead(tmp_path):
    idle = ProbeBed.keepalive_idle
    echo = server(Echo)
    async with await ProbeBed.start(tmp_path, echo) as bed:
        client = await open_link(bed)
        await until(lambda: bed.acks_settled(0), what="the first schedule to end")
        bed.sim.kill(0)

        await dead_link_ends(bed, client, idle + DEADLINE)
        last_read = bed.times("AT+QIRD=0,1,0,1500")[-1]  # the read that ended the traffic
        probe = bed.last_send(0)
        assert [e["cmd"] for e in bed.log() if e["t"] == probe] == ["AT+QISEND=0,1"]
        assert idle - LATE < probe - last_read < idle + LATE
        assert_schedule(bed, 0, probe)
        assert bed.modem.counters.get("link_dead", cause="no_ack_progress") == 1
        assert echo.connections[0].received == b"before"
        await echo_works(bed, b"next")


@pytest_twisted.ensureDeferred
async def test_idle_link_the_module_reports_closed_is_found_by_qistate(tmp_path):
    mute = 0.3  # the module's `0, CLOSED` URC is lost on the line
    echo = server(Echo)
    async with await StateCheckBed.start(tmp_path, echo) as bed:
        client = await open_link(bed)
        await until(lambda: bed.acks_settled(0), what="the first schedule to end")
        bed.sim.mute(mute)
        bed.sim.remote_close(0)
        await until(lambda: bed.module_sockets()["0"]["state"] == "CLOSED",
                    what="the module to see the close")
        muted_at = bed.log()[-1]["t"]
        assert client.received == b"before" and not client.closed.called

        await dead_link_ends(bed, client, StateCheckBed.keepalive_idle)
        checks = bed.times("AT+QISTATE", after=muted_at)
        closes = bed.times("AT+QICLOSE=0", after=muted_at)
        assert len(checks) == 1 and len(closes) == 1 and checks[0] < closes[0]
        assert "AT+QISACK=0" not in [e["cmd"] for e in bed.log() if e["t"] > muted_at]
        assert bed.modem.counters.get("link_dead", cause="idle_not_connected") == 1
        await echo_works(bed, b"next")


class StallBed(KeepaliveBed):
    """A dead link found in 15 s: long enough for the window's back-off to show its average."""

    modem_keys = "keepalive_first = 3\nkeepalive_interval = 4\nkeepalive_retries = 3\n"


@pytest_twisted.ensureDeferred
async def test_a_link_whose_acks_stall_costs_at_most_one_and_a_half_qisack_per_second(tmp_path):
    """Window polls and keepalive checks together, counted in the simulator's command log from
    the first send after the kill until AT+QICLOSE."""
    async with await StallBed.start(tmp_path, server(Echo)) as bed:
        doomed = await open_link(bed)
        await until(lambda: bed.acks_settled(0), what="the first schedule to end")
        bed.sim.kill(0)
        killed_at = bed.log()[-1]["t"]
        doomed.transport.write(salted(12 * 1024, seed=5))  # twice the send window: it blocks
        await dead_link_ends(bed, doomed, 15.0)
        start = [t for t in bed.times("AT+QISEND=0,1460", after=killed_at)][0]
        end = bed.times("AT+QICLOSE=0", after=start)[0]
        asked = bed.times("AT+QISACK=0", after=start)
        asked = [t for t in asked if t <= end]
        assert 15.0 - EPSILON <= end - start < 15.0 + 2.0  # the keepalive schedule, unchanged
        assert len(asked) <= 1.5 * (end - start), (len(asked), end - start)
        assert len(asked) > 4  # the window asked too, not only the keepalive's four checks
