"""SocketPool beside a module-side server: connections kept free for its clients (app note
§3.4: client plus server connections at most five while it listens), client links from the
highest index down, and the index the module picked for an accepted client claimed."""

from bridge.modem.pool import SocketPool


def pool(reserved=0):
    counts = []
    sockets = SocketPool(on_count=counts.append)
    sockets.reserve_for_servers(reserved)
    sockets.set_ready(True)
    return sockets, counts


def taken(sockets, n, group="p"):
    got = []
    for _ in range(n):
        sockets.acquire(group).addCallback(got.append)
    return got


def test_without_a_server_links_get_all_six_lowest_first():
    sockets, _ = pool()
    assert taken(sockets, 7) == [0, 1, 2, 3, 4, 5]
    assert sockets.waiting() == 1


def test_beside_a_server_links_get_five_minus_its_clients_from_the_top():
    sockets, _ = pool(reserved=3)
    assert taken(sockets, 3) == [5, 4]
    assert sockets.waiting("p") == 1
    assert sockets.must_wait("q")


def test_the_index_the_module_picked_is_claimed_and_counted():
    sockets, counts = pool(reserved=2)
    assert sockets.claim(0, "server:ssh")
    assert sockets.in_use == {0} and counts == [1]
    assert not sockets.claim(0, "server:ssh")  # already held
    assert not sockets.claim(6, "server:ssh")  # no such index
    assert taken(sockets, 4) == [5, 4, 3]  # accepted clients do not eat into the links' share
    sockets.release(0)
    assert sockets.in_use == {3, 4, 5}


def test_a_claim_on_an_index_a_link_holds_is_refused():
    sockets, _ = pool(reserved=1)
    assert taken(sockets, 1) == [5]
    assert not sockets.claim(5, "server:ssh")
    assert sockets.in_use == {5}


def test_the_reservation_holds_whatever_index_the_module_picked():
    sockets, _ = pool(reserved=1)
    assert sockets.claim(5, "server:ssh")
    assert taken(sockets, 5) == [4, 3, 2, 1]  # 4 links + 1 accepted client = 5
    sockets.release(5)
    assert sockets.waiting() == 1  # still four links: the reservation holds with no client


def test_a_link_waiting_at_its_cap_wants_a_links_index_back_not_an_accepted_clients():
    sockets, _ = pool(reserved=2)
    assert sockets.claim(0, "server:ssh")
    assert taken(sockets, 4) == [5, 4, 3]  # the third link waits for client room
    assert not sockets.wanted_by_waiter(0)  # freeing it leaves links at five minus two
    assert sockets.wanted_by_waiter(5)
