"""[server:NAME]: allow, one tcp and one udp server per modem, the five-connection cap shared
with the profiles' max_links (app note §3.4), and the warning for a server open to anyone."""

import ipaddress

from bridge.config import config_warnings, load_config
from tests.test_config import MODEM, problems, write

SERVER = "[server:ssh]\nport = 2020\nforward = tcp:127.0.0.1:22\n"


def test_allow_takes_addresses_and_networks(tmp_path):
    config = load_config(write(tmp_path, MODEM + SERVER + "allow = 10.0.0.0/8 192.0.2.7 172.16.5.1/12\n"))
    assert config.servers["ssh"].allow == (ipaddress.IPv4Network("10.0.0.0/8"),
                                           ipaddress.IPv4Network("192.0.2.7/32"),
                                           ipaddress.IPv4Network("172.16.0.0/12"))
    assert config_warnings(config) == []


def test_a_bad_allow_value_names_the_key(tmp_path):
    assert problems(tmp_path, MODEM + SERVER + "allow = 10.0.0.0/8 10.0.0.300\n") == [
        "[server:ssh] allow: '10.0.0.300' is not an IPv4 ADDR or ADDR/BITS "
        "(got '10.0.0.0/8 10.0.0.300')"]
    assert problems(tmp_path, MODEM + SERVER + "allow = 10.0.0.0/33\n")[0].startswith(
        "[server:ssh] allow: '10.0.0.0/33' is not")


def test_an_empty_allow_warns_that_the_service_is_exposed(tmp_path):
    path = write(tmp_path, MODEM + SERVER)
    assert config_warnings(load_config(path)) == [
        f"{path}: [server:ssh] allow: warning: empty, so any peer that reaches the module's port "
        "2020 gets to tcp:127.0.0.1:22: the local service is exposed to the carrier network"]


def test_one_tcp_and_one_udp_server_per_modem(tmp_path):
    assert problems(tmp_path, MODEM + SERVER + """
        [server:web]
        port = 8080
        forward = tcp:127.0.0.1:80
        [server:dns]
        protocol = udp
        port = 53
        forward = udp:127.0.0.1:53
        """) == [
        "[server:web] protocol: [modem:main] already has a tcp server, [server:ssh] (the module "
        "has one TCP listening port, AT+QILPORT) (got 'tcp')"]


def test_the_servers_of_a_modem_keep_at_most_five_connections(tmp_path):
    assert problems(tmp_path, MODEM + SERVER + "max_clients = 3\n" + """
        [server:dns]
        protocol = udp
        port = 53
        forward = udp:127.0.0.1:53
        max_clients = 3
        """) == [
        "[server:dns] max_clients: the servers of [modem:main] would keep 6 connections free, "
        "more than the module's 5 while it listens (app note §3.4) (got '3')"]


def test_an_explicit_max_links_must_fit_beside_the_servers(tmp_path):
    profile = "[profile:web]\nlisten = tcp:8080\nremote = tcp:h:80\n"
    assert problems(tmp_path, MODEM + SERVER + "max_clients = 3\n" + profile + "max_links = 3\n") == [
        "[profile:web] max_links: must be at most 2: [modem:main]'s servers keep 3 of the "
        "module's 5 connections free for their clients (app note §3.4) (got '3')"]
    # the default max_links is simply bounded by what is left (the socket pool enforces it)
    config = load_config(write(tmp_path, MODEM + SERVER + "max_clients = 3\n" + profile))
    assert config.profiles["web"].max_links == 6


def test_servers_on_another_modem_leave_a_profile_alone(tmp_path):
    config = load_config(write(tmp_path, MODEM + SERVER + "modem = main\nmax_clients = 5\n"
                               + "[modem:b]\nport = sim\n"
                               + "[profile:web]\nlisten = tcp:8080\nremote = tcp:h:80\n"
                               + "modem = b\nmax_links = 6\n"))
    assert config.profiles["web"].max_links == 6
