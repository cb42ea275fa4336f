"""Request headers decode to what the client sent however its HPACK encoder uses the dynamic
table — new entries, repeats that become indexed, evictions as 4 KiB fill up — including the
`frames` engine's memo of blocks that leave the table unchanged."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from net.conftest import ECHO
from net.h2_peer import Client, Wire, request_headers

names = st.sampled_from(["x-tenant", "x-request-id", "x-big", "x-a", "x-b"])
values = st.one_of(
    st.sampled_from(["1", "2", "alice"]), st.text("abcdef", min_size=1, max_size=300)
)
requests = st.lists(st.lists(st.tuples(names, values), max_size=4), min_size=1, max_size=25)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(sent=requests)
async def test_every_request_decodes_to_the_headers_sent(server, recorder, sent):
    client = Client()
    wire = await Wire.open(server.port, preface=False)
    await wire.handshake(client)
    first = len(recorder.calls)
    for extra in sent:
        stream_id = client.h2.get_next_available_stream_id()
        client.h2.send_headers(stream_id, request_headers(ECHO) + extra, end_stream=True)
        wire.write(client.out())
        await asyncio.sleep(0)
    await wire.read_until(lambda _: len(recorder.calls) - first == len(sent))
    wire.close()
    for record, extra in zip(recorder.calls[first:], sent, strict=True):
        received = [(n.decode(), v.decode()) for n, v in record.headers if not n.startswith(b":")]
        assert received == [("content-type", "application/grpc"), ("te", "trailers"), *extra]
