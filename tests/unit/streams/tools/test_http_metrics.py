"""``/metrics`` of ``streamrec serve`` (streams.tools.http_metrics) through the real app, as
tests.unit.streams.tools.test_serve drives it: requests counted by route template, method and status,
events accepted and rejected, and the read-key rules of the other read routes."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.unit.streams.tools import test_serve
from tests.unit.streams.tools.test_serve import LOCAL, REMOTE, event

# test_serve's fixtures: the app with a dict-backed Redis and a stand-in producer
fakes, serve = test_serve.fakes, test_serve.serve


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_requests_are_counted_by_route_template_method_and_status(serve):
    async with serve() as http:
        for user in ("u1", "u2", "u3"):
            assert (await http.get(f"/v1/recommendations/{user}")).status_code == 200
        assert (await http.get("/v1/recommendations/u1", params={"n": 0})).status_code == 422
        assert (await http.get("/no/such/path")).status_code == 404
        assert (await http.get("/no/other/path")).status_code == 404
        assert (await http.delete("/v1/popular")).status_code == 405
        answer = await http.get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    got = samples(answer.text)
    route = "/v1/recommendations/{user_id}"
    requests = "streamrec_http_requests_total"
    assert got[(requests, (("method", "GET"), ("route", route), ("status", "200")))] == 3
    assert got[(requests, (("method", "GET"), ("route", route), ("status", "422")))] == 1
    assert got[(requests, (("method", "GET"), ("route", "unmatched"), ("status", "404")))] == 2
    assert got[(requests, (("method", "DELETE"), ("route", "/v1/popular"), ("status", "405")))] == 1
    assert not [labels for name, labels in got if name == requests and "u1" in str(labels)]  # never the raw path
    duration = "streamrec_http_request_duration_seconds"
    assert got[(duration + "_count", (("method", "GET"), ("route", route)))] == 4
    assert got[(duration + "_bucket", (("le", "+Inf"), ("method", "GET"), ("route", route)))] == 4
    assert got[(duration + "_sum", (("method", "GET"), ("route", route)))] > 0
    assert ("process_cpu_seconds_total", ()) in got


async def test_events_accepted_and_rejected_are_counted_once_answered(serve, fakes):
    _, kafka = fakes
    async with serve() as http:
        answer = await http.post("/v1/events", json=[event(1), event(2, kind="poke"), "nope", event(3)])
        assert answer.status_code == 202
        kafka.fail = True  # the broker refuses: nothing is counted as accepted
        assert (await http.post("/v1/events", json=[event(4)])).status_code == 503
        kafka.fail = False
        got = samples((await http.get("/metrics")).text)
    assert got[("streamrec_http_events_accepted_total", ())] == 2
    assert got[("streamrec_http_events_rejected_total", (("reason", "bad_kind"),))] == 1
    assert got[("streamrec_http_events_rejected_total", (("reason", "not_object"),))] == 1
    assert got[("streamrec_http_requests_total", (("method", "POST"), ("route", "/v1/events"), ("status", "503")))] == 1


async def test_metrics_follow_the_read_routes_key_rules(serve):
    async with serve(client=REMOTE) as http:  # no keys: localhost only
        refused = await http.get("/metrics")
        assert (refused.status_code, refused.json()["error"]) == (403, "localhost_only")
    async with serve(client=REMOTE, api_keys_read="r1", api_keys_write="w1") as http:
        assert (await http.get("/metrics")).status_code == 401
        assert (await http.get("/metrics", headers={"Authorization": "Bearer nope"})).status_code == 401
        assert (await http.get("/metrics", headers={"Authorization": "Bearer r1"})).status_code == 200
        assert (await http.get("/metrics", headers={"Authorization": "Bearer w1"})).status_code == 200
    async with serve(client=LOCAL, api_keys_read="r1") as http:  # keys configured: localhost needs one too
        assert (await http.get("/metrics")).status_code == 401


async def test_each_app_counts_its_own_requests(serve):
    async with serve() as http:
        await http.get("/healthz")
    async with serve() as http:
        got = samples((await http.get("/metrics")).text)
    assert ("streamrec_http_requests_total", (("method", "GET"), ("route", "/healthz"), ("status", "200"))) not in got
