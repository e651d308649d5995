"""bridge.config: the TLS keys of profiles and servers, their files read at check (with
bridge.tls.files, the code the service uses), and the keys TLS cannot live with. Certificates are
made at test time with ``trustme``."""

import types

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs, formatEvent

from bridge.config import config_warnings, load_config
from bridge.service import CellbridgeService
from bridge.tls.files import public_key_pin
from tests.test_cli import cellbridge
from tests.test_config import MODEM, problems, write

TCP = "[profile:api]\nlisten = tcp:8443\nremote = tcp:api.example.com:443\n"
UDP = "[profile:dns]\nlisten = udp:5353\nremote = udp:192.0.2.1:53\n"
SERVER = "[server:web]\nport = 443\nforward = tcp:127.0.0.1:80\nallow = 10.0.0.0/8\n"
UDP_SERVER = ("[server:dns]\nprotocol = udp\nport = 53\nforward = udp:127.0.0.1:53\n"
              "allow = 10.0.0.0/8\n")


def pem(path, *blobs, mode=0o600):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(blobs))
    path.chmod(mode)
    return str(path)


def pin_of(cert):
    return public_key_pin(x509.load_pem_x509_certificate(cert.cert_chain_pems[0].bytes()))


@pytest.fixture(scope="module")
def authority():
    """A root CA, a leaf signed by its intermediate, and an unrelated leaf."""
    root = trustme.CA()
    leaf = root.create_child_ca().issue_cert("api.example.com")
    return types.SimpleNamespace(root=root, leaf=leaf, other=trustme.CA().issue_cert("other"))


@pytest.fixture
def pki(tmp_path, authority):
    """The PEM files of ``authority`` under tmp_path/pki, keys mode 0600."""
    leaf, folder = authority.leaf, tmp_path / "pki"
    return types.SimpleNamespace(
        ca=pem(folder / "ca.pem", authority.root.cert_pem.bytes()),
        cert=pem(folder / "cert.pem", *(blob.bytes() for blob in leaf.cert_chain_pems)),
        key=pem(folder / "key.pem", leaf.private_key_pem.bytes()),
        other_key=pem(folder / "other-key.pem", authority.other.private_key_pem.bytes()),
        not_pem=pem(folder / "notes.txt", b"just some text\n"))


def client(pki, extra=""):
    return (MODEM + TCP + f"tls = yes\ntls_ca = {pki.ca}\ntls_cert = {pki.cert}\n"
            f"tls_key = {pki.key}\n" + extra)


# -- what loads -----------------------------------------------------------------------------------

def test_a_client_profile_with_every_tls_key_loads(tmp_path, pki, authority):
    leaf, other = pin_of(authority.leaf), pin_of(authority.other)
    pins = f"sha256/{leaf[8:]} ; {other},{leaf}"  # both spellings, two separators, a repeat
    config = load_config(write(tmp_path, client(pki, "tls_hostname = 192.0.2.10\n"
                                                     f"tls_pin = {pins}\ntls_timeout = 12.5\n")))
    profile = config.profiles["api"]
    assert (profile.tls, profile.tls_hostname, profile.tls_timeout) == (True, "192.0.2.10", 12.5)
    assert (profile.tls_ca, profile.tls_cert, profile.tls_key) == (pki.ca, pki.cert, pki.key)
    assert profile.tls_pin == (leaf, other)  # curl's form, each once, in the order given
    assert config_warnings(config) == []


def test_tls_is_off_by_default_and_a_handshake_gets_30_seconds(tmp_path):
    config = load_config(write(tmp_path, MODEM + TCP + SERVER))
    profile, server = config.profiles["api"], config.servers["web"]
    assert (profile.tls, profile.tls_hostname, profile.tls_ca, profile.tls_pin, profile.tls_cert,
            profile.tls_key, profile.tls_timeout) == (False, "", None, (), None, None, 30.0)
    assert (server.tls, server.tls_cert, server.tls_key, server.tls_ca, server.tls_timeout) == (
        False, None, None, None, 30.0)


def test_a_pin_alone_is_enough(tmp_path, authority):
    pin = pin_of(authority.leaf)
    config = load_config(write(tmp_path, MODEM + TCP + f"tls = yes\ntls_pin = {pin}\n"))
    assert (config.profiles["api"].tls_pin, config.profiles["api"].tls_ca) == ((pin,), None)


def test_an_empty_tls_key_is_its_default(tmp_path):
    config = load_config(write(tmp_path, MODEM + TCP + "tls = yes\ntls_hostname =\ntls_ca =\n"
                                                       "tls_pin =\ntls_cert =\ntls_key =\n"))
    profile = config.profiles["api"]
    assert (profile.tls, profile.tls_hostname, profile.tls_ca, profile.tls_pin, profile.tls_cert,
            profile.tls_key) == (True, "", None, (), None, None)


def test_a_server_with_tls_loads(tmp_path, pki):
    config = load_config(write(tmp_path, MODEM + SERVER + f"tls = yes\ntls_cert = {pki.cert}\n"
                                                          f"tls_key = {pki.key}\n"
                                                          f"tls_ca = {pki.ca}\ntls_timeout = 60\n"))
    server = config.servers["web"]
    assert (server.tls, server.tls_cert, server.tls_key, server.tls_ca, server.tls_timeout) == (
        True, pki.cert, pki.key, pki.ca, 60.0)


def test_relative_paths_are_taken_from_the_config_files_directory(tmp_path, pki, monkeypatch):
    etc = tmp_path / "etc"
    etc.mkdir()
    monkeypatch.chdir(tmp_path / "pki")  # the working directory has a ca.pem too: not that one
    config = load_config(write(etc, MODEM + TCP + "tls = yes\ntls_ca = ../pki/ca.pem\n"
                                                  "tls_cert = ./../pki/cert.pem\n"
                                                  "tls_key = ../pki/key.pem\n"
                               + SERVER + "tls = yes\ntls_cert = ../pki/cert.pem\n"
                                          "tls_key = ../pki/key.pem\ntls_ca = ../pki/ca.pem\n"))
    profile, server = config.profiles["api"], config.servers["web"]
    assert (profile.tls_ca, profile.tls_cert, profile.tls_key) == (pki.ca, pki.cert, pki.key)
    assert (server.tls_ca, server.tls_cert, server.tls_key) == (pki.ca, pki.cert, pki.key)


def test_one_file_may_hold_the_key_and_the_certificate_chain(tmp_path, authority):
    both = pem(tmp_path / "both.pem", authority.leaf.private_key_and_cert_chain_pem.bytes())
    config = load_config(write(tmp_path, MODEM + SERVER + f"tls = yes\ntls_cert = {both}\n"
                                                          f"tls_key = {both}\n"))
    assert config.servers["web"].tls_cert == config.servers["web"].tls_key == both


# -- keys TLS cannot live with ------------------------------------------------------------------

def test_tls_keys_need_tls_yes_and_their_files_are_not_read_without_it(tmp_path):
    missing = str(tmp_path / "absent.pem")
    for tls in ("", "tls = no\n"):
        assert problems(tmp_path, MODEM + TCP + tls + f"tls_ca = {missing}\ntls_timeout = 5\n"
                        "tls_hostname = api.example.com\n" + SERVER + tls
                        + f"tls_key = {missing}\n") == [
            f"[profile:api] tls_ca: needs tls = yes (got {missing!r})",
            "[profile:api] tls_timeout: needs tls = yes (got '5')",
            "[profile:api] tls_hostname: needs tls = yes (got 'api.example.com')",
            f"[server:web] tls_key: needs tls = yes (got {missing!r})"]


def test_a_bad_tls_value_is_reported_once_without_the_keys_that_need_it(tmp_path):
    assert problems(tmp_path, MODEM + TCP + "tls = maybe\ntls_timeout = 5\n") == [
        "[profile:api] tls: not a boolean (use yes or no) (got 'maybe')"]


def test_tls_needs_a_tcp_stream(tmp_path, pki):
    assert problems(tmp_path, MODEM + UDP + "tls = yes\n" + UDP_SERVER
                    + f"tls = yes\ntls_cert = {pki.cert}\ntls_key = {pki.key}\n") == [
        "[profile:dns] tls: TLS needs a tcp stream: a udp profile cannot have it (DTLS is not "
        "supported) (got 'yes')",
        "[server:dns] tls: TLS needs a tcp stream: a udp server cannot have it (DTLS is not "
        "supported) (got 'yes')"]


def test_a_udp_profile_may_reopen_so_tls_is_its_only_problem(tmp_path):
    assert problems(tmp_path, MODEM + UDP + "tls = yes\nreopen = yes\n") == [
        "[profile:dns] tls: TLS needs a tcp stream: a udp profile cannot have it (DTLS is not "
        "supported) (got 'yes')"]


def test_tls_refuses_a_probe(tmp_path, pki):
    assert problems(tmp_path, client(pki, r"probe = PING\r\n" + "\n")) == [
        "[profile:api] probe: must be empty with tls = yes: bytes injected below TLS would "
        r"corrupt its stream (got 'PING\\r\\n')"]


def test_tls_refuses_reopen_on_a_tcp_profile(tmp_path, pki):
    assert problems(tmp_path, client(pki, "reopen = on\n")) == [
        "[profile:api] reopen: must be no with tls = yes: a new connection cannot continue a TLS "
        "session's byte stream (got 'on')"]
    assert load_config(write(tmp_path, client(pki, "reopen = no\nprobe =\n"))).profiles["api"].tls


def test_a_client_certificate_and_its_key_come_together(tmp_path, pki):
    assert problems(tmp_path, MODEM + TCP + f"tls = yes\ntls_cert = {pki.cert}\n") == [
        "[profile:api] tls_key: required with tls_cert"]
    assert problems(tmp_path, MODEM + TCP + f"tls = yes\ntls_key = {pki.key}\n") == [
        "[profile:api] tls_cert: required with tls_key"]


def test_a_tls_server_needs_its_certificate_and_key(tmp_path, pki):
    assert problems(tmp_path, MODEM + SERVER + f"tls = yes\ntls_ca = {pki.ca}\n") == [
        "[server:web] tls_cert: required with tls = yes",
        "[server:web] tls_key: required with tls = yes"]
    assert problems(tmp_path, MODEM + SERVER + f"tls = yes\ntls_cert = {pki.cert}\n"
                                               "tls_key =\n") == [
        "[server:web] tls_key: required with tls = yes"]


# -- the files ----------------------------------------------------------------------------------

def test_a_file_that_cannot_be_read_names_its_key(tmp_path, pki):
    absent = str(tmp_path / "absent.pem")
    assert problems(tmp_path, MODEM + TCP + f"tls = yes\ntls_ca = {absent}\n" + SERVER
                    + f"tls = yes\ntls_cert = {tmp_path}\ntls_key = {pki.key}\n") == [
        f"[profile:api] tls_ca: cannot read {absent}: No such file or directory (got {absent!r})",
        f"[server:web] tls_cert: cannot read {tmp_path}: Is a directory (got {str(tmp_path)!r})"]


def test_the_message_names_the_resolved_path_and_the_value_as_written(tmp_path):
    assert problems(tmp_path, MODEM + TCP + "tls = yes\ntls_ca = certs/ca.pem\n") == [
        f"[profile:api] tls_ca: cannot read {tmp_path}/certs/ca.pem: No such file or directory "
        "(got 'certs/ca.pem')"]


def test_files_that_hold_no_pem_name_their_key(tmp_path, pki):
    assert problems(tmp_path, MODEM + TCP + f"tls = yes\ntls_ca = {pki.key}\n"
                    f"tls_cert = {pki.not_pem}\ntls_key = {pki.not_pem}\n") == [
        f"[profile:api] tls_ca: {pki.key} holds no PEM certificate (got {pki.key!r})",
        f"[profile:api] tls_cert: {pki.not_pem} holds no PEM certificate (got {pki.not_pem!r})",
        f"[profile:api] tls_key: {pki.not_pem} holds no PEM private key (got {pki.not_pem!r})"]


def test_an_encrypted_key_is_refused(tmp_path, pki, authority):
    key = serialization.load_pem_private_key(authority.leaf.private_key_pem.bytes(), None)
    locked = pem(tmp_path / "locked.pem", key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase")))
    assert problems(tmp_path, MODEM + SERVER + f"tls = yes\ntls_cert = {pki.cert}\n"
                                               f"tls_key = {locked}\n") == [
        f"[server:web] tls_key: {locked} is encrypted: the daemon starts unattended, so the key "
        f"must be stored unencrypted (protect it with file permissions) (got {locked!r})"]


def test_a_key_that_does_not_fit_the_certificate_is_refused(tmp_path, pki):
    assert problems(tmp_path, MODEM + TCP + f"tls = yes\ntls_cert = {pki.cert}\n"
                                            f"tls_key = {pki.other_key}\n") == [
        f"[profile:api] tls_key: {pki.other_key} is not the key of the first certificate in "
        f"{pki.cert} (got {pki.other_key!r})"]


@pytest.mark.parametrize("value, message", [
    ("sha256//short=", "'sha256//short=' is not a sha256//BASE64 public-key pin (44 base64 "
                       "characters of a SHA-256 digest)"),
    ("md5//" + "A" * 43 + "=", f"'md5//{'A' * 43}=' is not a sha256//BASE64 public-key pin (44 "
                               "base64 characters of a SHA-256 digest)"),
    (";", "no pin given"),
])
def test_a_bad_pin_names_tls_pin(tmp_path, value, message):
    assert problems(tmp_path, MODEM + TCP + f"tls = yes\ntls_pin = {value}\n") == [
        f"[profile:api] tls_pin: {message} (got {value!r})"]


@pytest.mark.parametrize("key, value, message", [
    ("tls_hostname", "api_1.example.com", "not a valid host name (letters, digits, hyphens; "
                                          "dot-separated labels)"),
    ("tls_hostname", "192.0.2.300", "not a valid dotted IPv4 address"),
    ("tls_timeout", "0", "must be more than 0"),
    ("tls_ca", "ca\x07.pem", "contains a control character"),
])
def test_bad_tls_values(tmp_path, key, value, message):
    assert problems(tmp_path, MODEM + TCP + f"tls = yes\n{key} = {value}\n") == [
        f"[profile:api] {key}: {message} (got {value!r})"]


def test_every_tls_problem_is_reported_at_once(tmp_path, pki):
    assert problems(tmp_path, MODEM + TCP + f"tls = yes\nprobe = x\ntls_ca = {pki.not_pem}\n"
                    f"tls_cert = {pki.not_pem}\ntls_key = {pki.not_pem}\ntls_pin = x\n"
                    + SERVER + "tls = yes\n") == [
        "[profile:api] tls_pin: 'x' is not a sha256//BASE64 public-key pin (44 base64 "
        "characters of a SHA-256 digest) (got 'x')",
        "[profile:api] probe: must be empty with tls = yes: bytes injected below TLS would "
        "corrupt its stream (got 'x')",
        f"[profile:api] tls_ca: {pki.not_pem} holds no PEM certificate (got {pki.not_pem!r})",
        f"[profile:api] tls_cert: {pki.not_pem} holds no PEM certificate (got {pki.not_pem!r})",
        f"[profile:api] tls_key: {pki.not_pem} holds no PEM private key (got {pki.not_pem!r})",
        "[server:web] tls_cert: required with tls = yes",
        "[server:web] tls_key: required with tls = yes"]


# -- the key's permissions, and the command -----------------------------------------------------

def test_a_key_every_local_user_can_read_is_warned_about(tmp_path, pki, authority):
    open_key = pem(tmp_path / "open-key.pem", authority.leaf.private_key_pem.bytes(), mode=0o644)
    path = write(tmp_path, MODEM + TCP + f"tls = yes\ntls_cert = {pki.cert}\ntls_key = {open_key}\n"
                 + SERVER + f"tls = yes\ntls_cert = {pki.cert}\ntls_key = {open_key}\n")
    assert config_warnings(load_config(path)) == [
        f"{path}: [{section}] tls_key: warning: {open_key} is readable by every local user; "
        "chmod 0640 it (group of the service user) or use systemd's LoadCredential="
        for section in ("profile:api", "server:web")]


def test_the_daemon_logs_the_same_warnings_when_it_starts(tmp_path, pki, authority):
    open_key = pem(tmp_path / "open-key.pem", authority.leaf.private_key_pem.bytes(), mode=0o644)
    config = load_config(write(tmp_path, MODEM + TCP + f"tls = yes\ntls_cert = {pki.cert}\n"
                               f"tls_key = {open_key}\n"))
    with capturedLogs() as events:
        CellbridgeService(config, Clock()).startService()
    warned = [formatEvent(e) for e in events if e["log_level"] is LogLevel.warn]
    assert warned == config_warnings(config) and len(warned) == 1


def test_a_key_for_the_owner_and_group_only_is_not_warned_about(tmp_path, pki):
    for mode in (0o600, 0o640):
        (tmp_path / "pki" / "key.pem").chmod(mode)
        config = load_config(write(tmp_path, client(pki) + SERVER + f"tls = yes\n"
                                   f"tls_cert = {pki.cert}\ntls_key = {pki.key}\n"))
        assert config_warnings(config) == []


def test_check_exits_78_on_a_bad_tls_config_and_warns_on_a_good_one(tmp_path, pki):
    path = write(tmp_path, MODEM + TCP + f"tls = yes\ntls_cert = {pki.cert}\n"
                                         f"tls_key = {pki.other_key}\n")
    result = cellbridge("check", "-c", path)
    assert (result.returncode, result.stdout) == (78, "")
    assert result.stderr.splitlines() == [
        f"{path}: [profile:api] tls_key: {pki.other_key} is not the key of the first certificate "
        f"in {pki.cert} (got {pki.other_key!r})"]
    (tmp_path / "pki" / "key.pem").chmod(0o604)
    path = write(tmp_path, client(pki), name="good.ini")
    result = cellbridge("check", "-c", path)
    assert result.returncode == 0
    assert result.stderr == (f"{path}: [profile:api] tls_key: warning: {pki.key} is readable by "
                             "every local user; chmod 0640 it (group of the service user) or use "
                             "systemd's LoadCredential=\n")

