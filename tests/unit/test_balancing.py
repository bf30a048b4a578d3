"""Client-side balancing, as the client configures it: targets built from a list of
addresses or a dns:/// name, bad targets refused before any call, and the channel options
(channel.balanced_channel_options: gRPC's round_robin policy, client-side health checking, one
retry on UNAVAILABLE) with the caller's own options winning. Against real replicas:
tests/e2e/test_balancing.py."""

import json

import pytest

from pipeserve.client import Client
from pipeserve.client.channel import Endpoint, build_target


def _settings(target, channel_options=None, token=None) -> Endpoint:
    return Endpoint(target, max_message_bytes=1024, channel_options=channel_options, token=token)


@pytest.mark.parametrize(
    ("target", "expected", "balanced"),
    [
        ("127.0.0.1:50051", "127.0.0.1:50051", False),
        ("localhost:50051", "localhost:50051", False),
        ("dns:///pipeserve.ns.svc:50051", "dns:///pipeserve.ns.svc:50051", True),
        (["10.0.0.1:50051", " 10.0.0.2:50052 "], "ipv4:10.0.0.1:50051,10.0.0.2:50052", True),
        (("[::1]:50051", "[fe80::2]:1"), "ipv6:[::1]:50051,[fe80::2]:1", True),
        (["127.0.0.1:1"], "ipv4:127.0.0.1:1", True),
    ],
)
def test_build_target(target, expected, balanced):
    assert build_target(target) == (expected, balanced)


@pytest.mark.parametrize(
    ("target", "error", "match"),
    [
        ([], ValueError, "empty"),
        (["localhost:50051"], ValueError, "dns:///"),
        (["::1:50051"], ValueError, "brackets"),
        (["10.0.0.1"], ValueError, "host:port"),
        (["10.0.0.1:0"], ValueError, "host:port"),
        (["10.0.0.1:70000"], ValueError, "host:port"),
        (["10.0.0.1:1", "[::1]:1"], ValueError, "not both"),
        ([50051], TypeError, "strings"),
        (50051, TypeError, "string"),
    ],
)
def test_bad_targets_fail_before_any_call(target, error, match):
    with pytest.raises(error, match=match):
        build_target(target)
    with pytest.raises(error, match=match):
        Client(target)


def test_balanced_targets_get_round_robin_retry_and_health_checks():
    for target in (["127.0.0.1:1", "127.0.0.1:2"], "dns:///localhost:1"):
        options = dict(_settings(target).channel_options)
        assert options["grpc.lb_policy_name"] == "round_robin"
        config = json.loads(options["grpc.service_config"])
        (method,) = config["methodConfig"]
        assert method["name"] == [{"service": "pipeserve.v1.Inference"}]
        assert method["retryPolicy"]["maxAttempts"] == 2
        assert method["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
        assert config["healthCheckConfig"] == {"serviceName": "pipeserve.v1.Inference"}
    # With a token, health checks could be refused (no --auth-open-health): retry only.
    config = json.loads(
        dict(_settings("dns:///x:1", token="t").channel_options)["grpc.service_config"]
    )
    assert "healthCheckConfig" not in config
    assert config["methodConfig"]
    single = dict(_settings("localhost:1").channel_options)
    assert "grpc.lb_policy_name" not in single
    assert "grpc.service_config" not in single


def test_caller_options_beat_the_balancing_defaults():
    settings = _settings(
        "dns:///localhost:1",
        [("grpc.lb_policy_name", "pick_first"), ("grpc.service_config", "{}")],
    )
    options = dict(settings.channel_options)
    assert options["grpc.lb_policy_name"] == "pick_first"
    assert options["grpc.service_config"] == "{}"
    assert options["grpc.max_receive_message_length"] == 1024
