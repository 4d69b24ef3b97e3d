"""The edge's listening socket: taken first, refused with its name when taken, and every connection
it accepts writes at once (TCP_NODELAY), so a response written in two parts never waits for an ACK."""

from __future__ import annotations

import socket

import pytest

from devstack import free_port
from services.web.bootstrap import listening_socket
from services.web.config import WebSettings
from shared.settings import ConfigurationError


def test_accepted_connections_have_no_nagle_delay() -> None:
    listening = listening_socket(WebSettings(host="127.0.0.1", port=free_port()))
    try:
        with socket.create_connection(listening.getsockname()[:2]):
            accepted, _ = listening.accept()
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        listening.close()


def test_a_taken_port_is_refused_with_its_settings_named() -> None:
    settings = WebSettings(host="127.0.0.1", port=free_port())
    first = listening_socket(settings)
    try:
        with pytest.raises(ConfigurationError, match="WEB_HOST, WEB_PORT"):
            listening_socket(settings)
    finally:
        first.close()
