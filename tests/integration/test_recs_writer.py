"""RecsWriter against a real redis-server: values, TTLs, error replies, an unreachable server."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import redis

from streams.io.redis import RecsWriter, async_redis, encode_list
from streams.tools.dev import free_port

pytestmark = pytest.mark.integration


def test_write_lists_sets_every_value_with_its_ttl(make_settings):
    settings = make_settings(rec_ttl_s=1234)
    rng = np.random.default_rng(0)
    users = [f"u{j}" for j in range(2_345)]  # three socket writes
    items = [[f"i{k}" for k in rng.integers(0, 10_000, 50)] for _ in users]
    scores = rng.standard_normal((len(users), 50)).astype(np.float32)
    popular = [("p1", 3.0), ("p2", 2.123456)]

    async def run() -> None:
        client = async_redis(settings)
        writer = RecsWriter(client, settings)
        await writer.write_lists(users, items, scores, popular=popular, model_version="m1", updated_ms=99,
                                 popular_by_tag={"dance": popular[:1], "empty": []})
        values = await client.mget([settings.rec_key(u) for u in users])
        assert values == [encode_list(list(zip(i, s.tolist())), source="personal", updated_ms=99, model_version="m1",
                                      user_id=u) for u, i, s in zip(users, items, scores)]
        assert await client.get(settings.popular_key) == encode_list(popular, source="popular", updated_ms=99,
                                                                    model_version="m1")
        assert await client.get(settings.tag_popular_key("dance")) is not None
        assert not await client.exists(settings.tag_popular_key("empty"))
        ttls = [await client.ttl(k) for k in (settings.rec_key(users[0]), settings.rec_key(users[-1]),
                                              settings.popular_key, settings.tag_popular_key("dance"))]
        assert all(1200 < t <= 1234 for t in ttls)
        # the mapping form writes the same values; the connection is reusable between calls
        await writer.write({"solo": [("a", 0.5)]}, popular=None, model_version="m2", updated_ms=1)
        assert await client.get(settings.rec_key("solo")) == encode_list(
            [("a", 0.5)], source="personal", updated_ms=1, model_version="m2", user_id="solo")
        await writer.write_lists([], [], [], popular=None, model_version="m2", updated_ms=1)
        await client.aclose()

    asyncio.run(run())


def test_acl_user_limited_to_the_prefix_and_set_only(make_settings, services):
    admin_settings = make_settings()
    prefix = admin_settings.redis_prefix
    user = f"writer-{prefix}"

    async def run() -> None:
        admin = async_redis(admin_settings)
        await admin.execute_command("ACL", "SETUSER", user, "on", ">s3cret", f"~{prefix}:*", "+set")
        try:
            ok = make_settings(redis_prefix=prefix, redis_username=user, redis_password="s3cret")
            writer = RecsWriter(async_redis(ok), ok)
            await writer.write_lists(["u1", "u2"], [["i1"], ["i2"]], [[1.0], [2.0]], popular=[("i1", 1.0)],
                                     model_version="m", updated_ms=1)
            assert await admin.get(ok.rec_key("u2")) is not None
            # keys outside the prefix: every reply is NOPERM; the first is raised after all replies were read
            outside = make_settings(redis_username=user, redis_password="s3cret")
            denied = RecsWriter(async_redis(outside), outside)
            with pytest.raises(redis.exceptions.NoPermissionError):
                await denied.write_lists(["u1", "u2"], [["i1"], ["i2"]], [[1.0], [2.0]], popular=[("i1", 1.0)],
                                         model_version="m", updated_ms=1)
            await denied.write_lists([], [], [], popular=None, model_version="m", updated_ms=1)  # still usable
            await writer.client.aclose()
            await denied.client.aclose()
        finally:
            await admin.execute_command("ACL", "DELUSER", user)
            await admin.aclose()

    asyncio.run(run())


def test_unreachable_redis_raises_a_redis_error(make_settings):
    settings = make_settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")

    async def run() -> None:
        writer = RecsWriter(async_redis(settings), settings)
        with pytest.raises((redis.RedisError, OSError)):
            await writer.write_lists(["u1"], [["i1"]], [[1.0]], popular=None, model_version="m", updated_ms=1)
        await writer.client.aclose()

    asyncio.run(run())


def test_lists_over_tls_with_a_verified_server_certificate(tmp_path):
    """``rediss://`` with STREAMREC_REDIS_SSL_CA_CERTS: the writer writes, the reader reads, over TLS."""
    import shutil
    import subprocess

    from streams.client import RecsReader
    from streams.settings import Settings
    from streams.tools.dev import find_redis_server, start_redis

    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    help_text = subprocess.run([str(find_redis_server()), "--help"], capture_output=True, text=True).stdout
    tls_port = free_port()
    try:
        server = start_redis(free_port(), tmp_path, extra_args=[
            "--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
            "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"])
    except Exception as exc:  # a redis-server built without TLS refuses the --tls-* options
        pytest.skip(f"this redis-server has no TLS support ({type(exc).__name__}; {help_text[:80]!r})")
    try:
        settings = Settings(redis_url=f"rediss://127.0.0.1:{tls_port}/0", redis_ssl_ca_certs=str(cert),
                            redis_prefix="tlstest")

        async def write() -> None:
            client = async_redis(settings)
            await RecsWriter(client, settings).write({"u1": [("a", 0.9), ("b", 0.5)]}, popular=[("p", 1.0)],
                                                     model_version="v1", updated_ms=5)
            await client.aclose()

        asyncio.run(write())
        recs = RecsReader(settings).get("u1")
        assert (recs.source, recs.items) == ("personal", ["a", "b"])
        untrusted = Settings(redis_url=f"rediss://127.0.0.1:{tls_port}/0", redis_prefix="tlstest")
        assert RecsReader(untrusted).get("u1").source == "unavailable"  # the certificate is not trusted by default
    finally:
        server.stop()
