import random
import socket

LOOPBACK = "127.0.0.1"


# Below Linux's ephemeral range (32768-60999 by default): a port chosen there can be taken, between
# the choice and the server's bind, as the local end of any outgoing connection on the machine.
CHOSEN_PORTS = range(20000, 32000)


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that nothing listens on right now, outside the ephemeral range (another server may
    still take it, but no outgoing connection will)."""
    for _ in range(200):
        port = random.choice(CHOSEN_PORTS)
        if port_is_free(port, host):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:  # a crowded range: let the OS choose
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def port_accepts_connections(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the servers do: a port whose old connections linger in TIME_WAIT is free to them.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
            return True
        except OSError:
            return False
