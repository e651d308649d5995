"""Framer tests: pure bytes in, frames out (no reactor)."""

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.at.framing import (
    ESCAPE_OK_MARKER,
    Data,
    Framer,
    Junk,
    Line,
    Marker,
    Payload,
    Prompt,
)


def frames_of(*chunks, framer=None):
    framer = framer or Framer()
    out = []
    for chunk in chunks:
        out.extend(framer.feed(chunk))
    return out


def prompting() -> Framer:
    """A framer whose consumer has just written an AT+QISEND line."""
    framer = Framer()
    framer.expect(prompt=True)
    return framer


def test_crlf_lines_and_empty_lines_dropped():
    assert frames_of(b"\r\n+CSQ: 20,0\r\n\r\nOK\r\n") == [Line(b"+CSQ: 20,0"), Line(b"OK")]


def test_cr_only_and_lf_only_terminators():
    assert frames_of(b"OK\rERROR\nRDY\r\n") == [Line(b"OK"), Line(b"ERROR"), Line(b"RDY")]


def test_echoed_command_line_is_a_line_of_its_own():
    # ATE1: the command comes back with its CR, then the normal \r\n-framed response.
    assert frames_of(b"AT+GSN\r\r\n861234567890123\r\n\r\nOK\r\n") == [
        Line(b"AT+GSN"), Line(b"861234567890123"), Line(b"OK")]


def test_prompt_without_line_ending():
    assert frames_of(b"\r\n> ", framer=prompting()) == [Prompt()]


def test_prompt_gt_is_held_until_its_space_arrives():
    framer = prompting()
    assert frames_of(b"\r\n>", framer=framer) == []
    assert frames_of(b" \r\nSEND OK\r\n", framer=framer) == [Prompt(), Line(b"SEND OK")]


def test_gt_without_its_space_is_a_line_not_a_prompt():
    framer = prompting()
    out = frames_of(b"\r\n>", b"x\r\nERROR\r\n", framer=framer)
    assert out == [Line(b">x"), Line(b"ERROR")]


def test_prompt_is_a_line_when_no_send_waits_for_it():
    assert frames_of(b"\r\n> AT+CFUN=0\r\n") == [Line(b"> AT+CFUN=0")]


def test_one_prompt_per_expectation():
    framer = prompting()
    assert frames_of(b"\r\n> ", framer=framer) == [Prompt()]
    assert frames_of(b"\r\n> \r\n", framer=framer) == [Line(b"> ")]


def test_ended_expectation_turns_the_prompt_back_into_text():
    framer = prompting()
    framer.expect()
    assert frames_of(b"> \r\n", framer=framer) == [Line(b"> ")]


def test_receive_payload_may_contain_ok_and_send_ok():
    data = b"\r\nOK\r\nSEND OK\r\n"
    wire = b"\r\n+RECEIVE: 1, %d\r\n" % len(data) + data + b"\r\nOK\r\n"
    assert frames_of(wire) == [Payload(b"+RECEIVE: 1, %d" % len(data), data), Line(b"OK")]


def test_receive_header_without_space_and_payload_starting_with_lf():
    assert frames_of(b"+RECEIVE: 0,2\r\n\nX") == [Payload(b"+RECEIVE: 0,2", b"\nX")]


def test_receive_with_ipd_prefix_when_qihead_is_on():
    assert frames_of(b"\r\n+RECEIVE: 0, 3\r\nIPD3TCP:abc\r\n") == [
        Payload(b"+RECEIVE: 0, 3", b"abc")]


def test_receive_data_that_merely_starts_like_ipd_is_data():
    assert frames_of(b"+RECEIVE: 0, 4\r\nIPD9") == [Payload(b"+RECEIVE: 0, 4", b"IPD9")]


def test_qird_payload_then_ok():
    wire = b"\r\n+QIRD: 216.58.207.46:80,TCP,5\r\nhe\r\no\r\nOK\r\n"
    assert frames_of(wire) == [Payload(b"+QIRD: 216.58.207.46:80,TCP,5", b"he\r\no"),
                               Line(b"OK")]


def test_single_link_ipd_with_peer_lines():
    wire = b"RECV FROM:1.2.3.4:80\r\nTO:10.0.0.1\r\nIPD3UDP:x\ny"
    assert frames_of(wire) == [
        Payload(b"IPD3UDP:", b"x\ny", (b"RECV FROM:1.2.3.4:80", b"TO:10.0.0.1"))]


def test_peer_lines_without_payload_become_plain_lines():
    assert frames_of(b"TO:1.2.3.4\r\nOK\r\n") == [Line(b"TO:1.2.3.4"), Line(b"OK")]


def test_qirdi_glued_to_ok_is_split():
    assert frames_of(b"\r\nOK+QIRDI: 0,1,0\r\n") == [Line(b"OK"), Line(b"+QIRDI: 0,1,0")]


def test_echo_of_payload_is_skipped_even_when_it_contains_line_ends():
    framer = prompting()
    assert frames_of(b"\r\n> ", framer=framer) == [Prompt()]
    framer.expect_echo(b"a\r\nOK\r\nb")
    assert frames_of(b"a\r\nOK", b"\r\nb\r\nSEND OK\r\n", framer=framer) == [Line(b"SEND OK")]


def test_expected_echo_that_does_not_come_is_forgotten():
    framer = Framer()
    framer.expect_echo(b"payload")
    assert frames_of(b"\r\nSEND OK\r\n", framer=framer) == [Line(b"SEND OK")]


def test_overlong_garbage_is_junk_and_parsing_recovers():
    framer = Framer(max_line=16)
    out = frames_of(b"\x00\xff" * 20, b"\r\nOK\r\n", framer=framer)
    assert isinstance(out[0], Junk)
    assert out[-1] == Line(b"OK")


def test_binary_garbage_lines_do_not_raise():
    assert frames_of(b"\xfe\x00\x1b\r\nOK\r\n") == [Line(b"\xfe\x00\x1b"), Line(b"OK")]


def test_data_mode_passes_everything_and_holds_possible_close_marker():
    framer = Framer()
    out = frames_of(b"\r\nCONNECT\r", framer=framer)
    assert out == [Line(b"CONNECT")]
    framer.set_data_mode(True)
    out = frames_of(b"\nOK\r\nabc\r\nCLO", framer=framer)
    assert out == [Data(b"OK\r\nabc")]
    assert framer.held == b"\r\nCLO"
    assert frames_of(b"SED\r\n", framer=framer) == [Marker(b"CLOSED")]
    # More bytes after the marker: it was payload after all.
    assert frames_of(b"!", framer=framer) == [Data(b"\r\nCLOSED\r\n!")]


def test_data_mode_escape_ok_marker_and_return_to_lines():
    framer = Framer()
    framer.set_data_mode(True, markers=(ESCAPE_OK_MARKER,))
    assert frames_of(b"xy\r\nOK\r\n", framer=framer) == [Data(b"xy"), Marker(b"OK")]
    framer.set_data_mode(False)
    assert frames_of(b"\r\n+QISACK: 1, 1, 0\r\n", framer=framer) == [
        Line(b"+QISACK: 1, 1, 0")]


def test_release_held_hands_back_the_tail():
    framer = Framer()
    framer.set_data_mode(True)
    assert frames_of(b"ab\r", framer=framer) == [Data(b"ab")]
    assert framer.release_held() == b"\r"
    assert framer.held == b""


def test_bulk_payload_in_tiny_reads_keeps_buffer_small():
    framer = Framer()
    data = bytes(range(250)) * 6
    wire = b"\r\n+QIRD: 1.2.3.4:5,TCP,1500\r\n" + data + b"\r\nOK\r\n"
    out = []
    for i in range(0, len(wire), 7):
        out.extend(framer.feed(wire[i:i + 7]))
    assert out == [Payload(b"+QIRD: 1.2.3.4:5,TCP,1500", data), Line(b"OK")]
    assert len(framer._buf) == 0


RECORDED = (
    b"AT+QISEND=0,5\r\r\n+QIRDI: 0,1,0\r\n\r\n> "
    b"\r\nSEND OK\r\n"
    b"\r\n+RECEIVE: 2, 12\r\n\r\nOK\r\nSEND O\r\n"
    b"\r\n3, CONNECT OK\r\n"
    b"\r\n+QIRD: 1.2.3.4:80,TCP,4\r\nIPD4\r\nOK\r\n"
    b"IPD2TCP:hi"
    b"\r\nOK\r\n+QIRDI: 0,1,1\r\n"
    b"\xff\xfegarbage\r"
    b"\r\n+RECEIVE: 1, 3\r\nIPD3:abc\r\n"
    b"RECV FROM:9.8.7.6:53\r\nIPD1UDP:z"
    b"\r\n0, CLOSED\r\n"
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(RECORDED)), max_size=40))
def test_any_split_yields_the_same_frames(cuts):
    points = sorted(set(cuts))
    chunks = [RECORDED[a:b] for a, b in zip([0] + points, points + [len(RECORDED)])]
    frames = frames_of(*chunks, framer=prompting())
    assert Prompt() in frames and frames == frames_of(RECORDED, framer=prompting())


# -- headers that announce more than the dialect carries, and reset ---------------------------

def test_push_header_above_the_largest_frame_is_junk_and_lines_go_on():
    out = frames_of(b"\r\n+RECEIVE: 0, 65000\r\n\r\nOK\r\n")
    assert out == [
        Junk(b"+RECEIVE: 0, 65000", "header announces 65000 payload bytes, more than 1500"),
        Line(b"OK")]


def test_push_header_of_the_largest_frame_is_a_payload():
    data = bytes(1500)
    assert frames_of(b"+RECEIVE: 3, 1500\r\n" + data + b"\r\nOK\r\n") == [
        Payload(b"+RECEIVE: 3, 1500", data), Line(b"OK")]


def test_oversized_header_after_peer_lines_keeps_the_order():
    out = frames_of(b"RECV FROM:1.2.3.4:80\r\n+RECEIVE: 0, 1234567\r\nOK\r\n")
    assert out == [Line(b"RECV FROM:1.2.3.4:80"),
                   Junk(b"+RECEIVE: 0, 1234567",
                        "header announces 1234567 payload bytes, more than 1500"),
                   Line(b"OK")]


def test_single_link_ipd_above_the_largest_frame_is_junk():
    out = frames_of(b"IPD9999TCP:\r\nOK\r\n")
    assert out == [Junk(b"IPD9999TCP:", "header announces 9999 payload bytes, more than 1500"),
                   Line(b"OK")]


def test_qird_header_above_the_length_asked_for_is_junk():
    framer = Framer()
    framer.expect(read_length=100)
    out = frames_of(b"\r\n+QIRD: 1.2.3.4:80,TCP,101\r\n\r\nOK\r\n", framer=framer)
    assert out == [Junk(b"+QIRD: 1.2.3.4:80,TCP,101",
                        "header announces 101 payload bytes, more than 100"), Line(b"OK")]
    framer.expect(read_length=100)
    assert frames_of(b"+QIRD: 1.2.3.4:80,TCP,100\r\n" + bytes(100), framer=framer) == [
        Payload(b"+QIRD: 1.2.3.4:80,TCP,100", bytes(100))]


def test_reset_drops_a_half_cut_payload_and_says_how_much():
    framer = Framer()
    assert frames_of(b"TO:10.0.0.1\r\n+RECEIVE: 0, 100\r\n0123456789", framer=framer) == []
    assert framer.mid_payload
    assert framer.reset() == len(b"TO:10.0.0.1") + 10
    assert not framer.mid_payload
    assert frames_of(b"\r\nOK\r\n", framer=framer) == [Line(b"OK")]


def test_reset_without_a_half_cut_payload_keeps_a_partial_line():
    framer = Framer()
    assert frames_of(b"\r\n+CS", framer=framer) == []
    assert framer.reset() == 0
    assert frames_of(b"Q: 9,0\r\n", framer=framer) == [Line(b"+CSQ: 9,0")]
