"""Bearer tokens, the role table and signed ticket links (pure parts, fake clock)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bridge.config import TokenConfig
from bridge.sidecar.auth import (
    GRANTS,
    AuthConfig,
    Permission,
    Principal,
    Role,
    bearer_token,
    may_access_ticket,
)
from bridge.sidecar.links import ExpiredLink, LinkError, LinkSigner
from bridge.tickets import lifecycle
from bridge.tickets.model import TicketDraft

NOW = 1_700_000_000.0
SECRET = "link-secret-for-tests-0123456789"


def auth(*tokens: dict[str, str]) -> AuthConfig:
    return AuthConfig.model_validate({"tokens": list(tokens)})


def test_tokens_map_to_principals() -> None:
    config = auth(
        {"token": "a" * 16, "name": "alice", "role": "agent", "seat": "seat-1001"},
        {"token": "p" * 16, "name": "110-pbx", "role": "peer", "platform": "110"},
        {"token": "q" * 16, "name": "12313", "role": "peer"},
    )
    assert config.authenticate("a" * 16) == Principal(
        name="alice", role=Role.AGENT, seat="seat-1001"
    )
    assert config.authenticate("p" * 16) == Principal(
        name="110-pbx", role=Role.PEER, platform="110"
    )
    peer = config.authenticate("q" * 16)
    assert peer is not None
    assert peer.platform == "12313"
    assert config.authenticate("a" * 15) is None
    assert config.authenticate("") is None


def test_token_config_is_strict_and_keeps_secrets_out_of_reprs() -> None:
    with pytest.raises(ValidationError):
        auth({"token": "short", "name": "x", "role": "agent"})
    with pytest.raises(ValidationError):
        auth({"token": "a" * 16, "name": "x", "role": "root"})
    with pytest.raises(ValidationError):
        auth({"token": "a" * 16, "name": "x", "role": "agent", "colour": "red"})
    with pytest.raises(ValidationError, match="twice"):
        auth(
            {"token": "a" * 16, "name": "x", "role": "agent"},
            {"token": "a" * 16, "name": "y", "role": "admin"},
        )
    config = auth({"token": "secret-token-value-1", "name": "x", "role": "agent"})
    assert "secret-token-value-1" not in repr(config)
    assert "secret-token-value-1" not in str(config.model_dump())


def test_built_from_the_service_config_entries() -> None:
    entries = [
        TokenConfig(token="t" * 16, name="sue", role="supervisor"),
        TokenConfig(token="u" * 16, name="110-pbx", role="peer", platform="110"),
    ]
    config = AuthConfig.from_token_configs(entries)
    sue = config.authenticate("t" * 16)
    assert sue is not None
    assert sue.role is Role.SUPERVISOR


def test_role_table_matches_the_product_rules() -> None:
    assert Permission.TRANSFER in GRANTS[Role.AGENT]
    assert Permission.CREATE_TICKET in GRANTS[Role.AGENT]
    assert Permission.SUPERVISE not in GRANTS[Role.AGENT]
    assert GRANTS[Role.AGENT] < GRANTS[Role.SUPERVISOR] < GRANTS[Role.ADMIN]
    assert Permission.SUPERVISE in GRANTS[Role.SUPERVISOR]
    assert Permission.RELOAD_DIALPLAN not in GRANTS[Role.SUPERVISOR]
    assert Permission.RELOAD_DIALPLAN in GRANTS[Role.ADMIN]
    assert GRANTS[Role.PEER] == {
        Permission.READ_TICKETS,
        Permission.DECIDE_TICKET,
        Permission.POST_FEEDBACK,
        Permission.SUBSCRIBE_EVENTS,
    }


def test_peers_reach_only_tickets_sent_to_their_platform() -> None:
    draft = TicketDraft(origin="12345", category="criminal", destination="110")
    ticket = lifecycle.create(draft, ticket_id="T1", actor="a", now=NOW).ticket
    undirected = ticket.model_copy(update={"destination": None})
    peer_110 = Principal(name="110-pbx", role=Role.PEER, platform="110")
    peer_other = Principal(name="12313", role=Role.PEER, platform="12313")
    agent = Principal(name="alice", role=Role.AGENT)
    assert may_access_ticket(peer_110, ticket)
    assert not may_access_ticket(peer_other, ticket)
    assert not may_access_ticket(peer_110, undirected)
    assert may_access_ticket(agent, undirected)


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer   abc  ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_header_parsing(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


def test_link_round_trip_and_url() -> None:
    signer = LinkSigner(SECRET, base_url="http://127.0.0.1:8080/", ttl_seconds=60)
    token = signer.token("T1", NOW)
    signer.verify("T1", token, NOW)
    signer.verify("T1", token, NOW + 59.9)
    url = signer.ticket_url("T1", NOW)
    assert url == f"http://127.0.0.1:8080/api/v1/tickets/T1?token={token}"
    # Nothing in the URL needs escaping inside <...> of a SIP Call-Info header.
    assert all(c.isalnum() or c in ":/.?=_-" for c in url)


def test_expired_link_is_authentic_but_refused_with_403() -> None:
    signer = LinkSigner(SECRET, ttl_seconds=60)
    token = signer.token("T1", NOW)
    with pytest.raises(ExpiredLink) as info:
        signer.verify("T1", token, NOW + 60)
    assert info.value.http_status == 403


def test_forged_links_are_refused_with_401() -> None:
    signer = LinkSigner(SECRET, ttl_seconds=60)
    token = signer.token("T1", NOW)
    expires, signature = token.split(".")
    attempts = [
        signer.token("T2", NOW),
        f"{int(expires) + 1}.{signature}",
        f"{expires}.{signature[::-1]}",
        LinkSigner("another-secret-0123456789").token("T1", NOW),
        f"{expires}.{signature}=",
        f"0{expires}.{signature}",  # the same expiry spelt differently is not the token we gave
        "nonsense",
    ]
    for attempt in attempts:
        with pytest.raises(LinkError) as info:
            signer.verify("T1", attempt, NOW)
        assert not isinstance(info.value, ExpiredLink), attempt
        assert info.value.http_status == 401


def test_signer_refuses_weak_settings() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        LinkSigner("short")
    with pytest.raises(ValueError, match="positive"):
        LinkSigner(SECRET, ttl_seconds=0)
