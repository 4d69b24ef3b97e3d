"""The notifier's pure parts: SMTP_URL, backoff, failure classes, the email, the send-time checks."""

from __future__ import annotations

import email
import email.message
import email.policy
import secrets
from datetime import UTC, datetime, timedelta

import aiosmtplib
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.notifier.config import NotifierSettings
from services.notifier.deliveries import MAX_ERROR_CHARS, PermanentFailure, describe, is_permanent, why_not_send
from services.notifier.mail import Invitation, compose, message_id
from services.notifier.smtp import InvalidSmtpUrl, parse_smtp_url
from shared.invitations import accept_link, invitation_token, token_matches
from shared.settings import Settings

UTC = UTC
T0 = datetime(2024, 3, 10, 9, 30, tzinfo=UTC)
SECRET = "unit-secret"


def test_plain_smtp_url_with_the_local_default():
    url = parse_smtp_url("smtp://127.0.0.1:2525")
    assert (url.host, url.port, url.username, url.password) == ("127.0.0.1", 2525, None, None)
    assert url.client_options(5)["use_tls"] is False and url.client_options(5)["start_tls"] is False
    assert parse_smtp_url("smtp://localhost").port == 25
    assert parse_smtp_url(Settings(server_secret=secrets.token_urlsafe(48)).smtp_url) == url


def test_starttls_url_carries_decoded_credentials_and_never_shows_the_password():
    url = parse_smtp_url("smtp+starttls://mailer%40acme.io:p%40ss%2Fw0rd@relay.acme.io:587")
    assert (url.username, url.password, url.host, url.port) == ("mailer@acme.io", "p@ss/w0rd", "relay.acme.io", 587)
    options = url.client_options(10)
    assert options["start_tls"] is True and options["use_tls"] is False and options["password"] == "p@ss/w0rd"
    assert "p@ss" not in url.redacted() and "p%40ss" not in url.redacted() and "p@ss" not in repr(url)
    assert url.redacted() == "smtp+starttls://mailer@acme.io:***@relay.acme.io:587"


def test_smtps_url_is_implicit_tls_with_its_default_port():
    url = parse_smtp_url("smtps://user:secret@smtp.example.com")
    assert url.port == 465 and url.client_options(1)["use_tls"] is True and url.client_options(1)["start_tls"] is False


@pytest.mark.parametrize("bad", ["http://host:25", "smtp://:25", "smtp://host:notaport", "smtp://:pw@host:25"])
def test_bad_smtp_urls_are_refused_with_a_reason(bad):
    with pytest.raises(InvalidSmtpUrl):
        parse_smtp_url(bad)


def test_backoff_doubles_from_the_base_up_to_the_cap():
    settings = NotifierSettings(retry_base_seconds=1, retry_max_seconds=60)
    assert [settings.backoff(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert settings.backoff(10_000) == 60


def test_settings_from_env_and_the_sending_timeout_must_outlast_a_send():
    settings = NotifierSettings.from_env({"SMTP_RETRY_BASE_SECONDS": "0.25", "MAIL_FROM": "Acme <a@b.io>"})
    assert settings.retry_base_seconds == 0.25 and settings.mail_from == "Acme <a@b.io>"
    with pytest.raises(ValueError):
        NotifierSettings.from_env({"SMTP_TIMEOUT_SECONDS": "30", "NOTIFIER_SENDING_TIMEOUT_SECONDS": "10"})
    for batch in ("0", "-3", "1001"):
        with pytest.raises(ValueError, match="NOTIFIER_SEND_BATCH"):
            NotifierSettings.from_env({"NOTIFIER_SEND_BATCH": batch})
    assert NotifierSettings.from_env({"NOTIFIER_SEND_BATCH": "1"}).send_batch == 1


def test_5xx_to_the_recipient_or_the_data_is_permanent_and_everything_else_temporary():
    assert is_permanent(aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(550, "no such user", "x@y.io")]))
    assert is_permanent(aiosmtplib.SMTPDataError(554, "rejected"))
    assert is_permanent(PermanentFailure("cannot write it"))
    assert not is_permanent(aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(451, "try later", "x@y.io")]))
    assert not is_permanent(aiosmtplib.SMTPDataError(452, "full"))
    assert not is_permanent(aiosmtplib.SMTPConnectError("refused"))
    assert not is_permanent(aiosmtplib.SMTPServerDisconnected("gone"))
    assert not is_permanent(TimeoutError())
    assert not is_permanent(aiosmtplib.SMTPAuthenticationError(535, "bad credentials"))  # configuration, not this message
    assert not is_permanent(aiosmtplib.SMTPSenderRefused(550, "bad sender", "no-reply@x"))


def invitation(**overrides) -> Invitation:
    fields = dict(
        event_id="evt_0123abc",
        invitation_id="inv_42",
        recipient="new.person@example.com",
        org_name="Acme",
        inviter="owner@acme.io",
        expires_at=T0 + timedelta(days=7),
        resent=False,
    )
    return Invitation(**{**fields, **overrides})


def read_back(outgoing) -> email.message.EmailMessage:
    return email.message_from_bytes(outgoing.content, policy=email.policy.default)  # type: ignore[return-value]


def parts(message) -> dict[str, str]:
    return {part.get_content_type(): part.get_content() for part in message.walk() if not part.is_multipart()}


def test_the_email_names_org_and_inviter_and_carries_a_link_membership_accepts():
    inv = invitation()
    outgoing = compose(inv, mail_from="Team <no-reply@x.io>", public_url="https://app.example/", server_secret=SECRET, now=T0)
    assert (outgoing.envelope_from, outgoing.envelope_to) == ("no-reply@x.io", "new.person@example.com")
    message = read_back(outgoing)
    assert message["To"] == "new.person@example.com"
    assert "Acme" in message["Subject"] and "owner@acme.io" in message["Subject"]
    assert message["Message-ID"] == message_id("evt_0123abc") == "<evt_0123abc@team-members.notifier>"
    bodies = parts(message)
    assert set(bodies) == {"text/plain", "text/html"}
    token = invitation_token(SECRET, "inv_42", inv.expires_at)
    link = accept_link("https://app.example", "inv_42", token)
    assert link.startswith("https://app.example/invitations/inv_42/accept?token=")
    assert link in bodies["text/plain"] and link in bodies["text/html"]
    assert token_matches(SECRET, token, "inv_42", inv.expires_at)
    assert "17 March 2024" in bodies["text/plain"] and "17 March 2024" in bodies["text/html"]


def test_user_input_is_escaped_in_html_and_kept_out_of_header_structure():
    hostile = invitation(org_name="<script>alert(1)</script> & Co\r\nBcc: victim@x.io", inviter='"><img src=x onerror=alert(2)>')
    message = read_back(compose(hostile, mail_from="t@x.io", public_url="http://l", server_secret=SECRET, now=T0))
    html = parts(message)["text/html"]
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co" in html
    assert "<img" not in html and "&lt;img src=x onerror=alert(2)&gt;" in html
    assert "<script>alert(1)</script> & Co  Bcc: victim@x.io" in parts(message)["text/plain"]
    assert "\n" not in message["Subject"] and message["Bcc"] is None


def test_a_duplicate_send_carries_the_same_message_id():
    first = read_back(compose(invitation(), mail_from="t@x.io", public_url="http://l", server_secret=SECRET, now=T0))
    again = read_back(
        compose(invitation(), mail_from="t@x.io", public_url="http://l", server_secret=SECRET, now=T0 + timedelta(hours=1))
    )
    assert first["Message-ID"] == again["Message-ID"]


def row(**overrides):
    fields = dict(event_id="e1", invitation_status="pending", current_event_id="e1", expires_at=T0 + timedelta(days=7))
    return {**fields, **overrides}


def test_what_is_not_mailed_late():
    assert why_not_send(row(), T0) is None
    assert why_not_send(row(invitation_status="revoked"), T0) == "invitation revoked"
    assert why_not_send(row(invitation_status="accepted"), T0) == "invitation accepted"
    assert why_not_send(row(current_event_id="e2"), T0) == "superseded by a later resend"
    assert why_not_send(row(), T0 + timedelta(days=7)) == "invitation expired"


@given(words=st.text(), raw=st.binary(max_size=300), code=st.integers(min_value=400, max_value=599))
def test_describe_gives_text_postgresql_takes_whatever_the_server_said(words, raw, code):
    # a reply's bytes reach us as `surrogateescape` text; PostgreSQL takes neither a NUL nor a lone surrogate
    message = words + raw.decode("utf-8", "surrogateescape")
    for error in (
        aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(code, message, "a@b.test")]),
        aiosmtplib.SMTPDataError(code, message),
        PermanentFailure(message),
        OSError(message),
    ):
        described = describe(error)
        assert "\x00" not in described
        described.encode("utf-8")  # raises on a lone surrogate
        assert len(described) <= MAX_ERROR_CHARS
