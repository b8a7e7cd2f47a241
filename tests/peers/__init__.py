"""Real, independent SIP peers for integration tests: SIPp, baresip and pyVoIP on loopback.

Import as `peers.<module>` (tests/conftest.py puts tests/ on sys.path). Fixtures in
tests/conftest.py: `ports` (PortAllocator), `sipp` (SippRun factory), `baresip` (async Baresip
factory), `pyvoip_seat` (async PyVoIPSeat factory). Mark tests `@pytest.mark.peers("sipp", ...)`.

SIPp scenarios in tests/data/sipp (each checked against its counterpart in
tests/integration/test_peers_harness.py). -s sets the Request-URI user, -d each <pause/>:

    callers (UAC)        callees (UAS)          what
    uac_basic            uas_basic              call, pause, caller hangs up
    uac_delayed_offer    uas_basic              INVITE without SDP: offer in 200, answer in ACK
    uac_recv_bye         uas_bye                call, pause, callee hangs up
    uac_cancel           uas_noanswer           ringing, caller cancels: 200 + 487
    uac_busy             uas_busy               486 Busy Here
    uac_hold             uas_hold               re-INVITE sendonly/recvonly, then sendrecv
    uac_ticket (keys)    uas_ticket             ticket headers required and logged
    uac_register (-au)   uas_register (keys)    digest-authenticated REGISTER
    (pyVoIP)             uas_register_call      registrar that then calls the seat
    (baresip transfer)   uas_refer              REFER 202, NOTIFY sipfrag 200, BYE

Keys (-key, `SippRun(keys=...)`): uac_ticket needs ticket_id, ticket_url, ticket_uui (hex),
referred_by, priority; uas_register / uas_register_call need auth_user, auth_password;
uac_register needs expires (and -au / -ap for its credentials). Scenarios that log what they
received write "<call number> <Name>: <value>" lines: read them with SippRun.logged_headers().
"""
