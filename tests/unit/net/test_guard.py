"""The SSRF guard: which addresses are refused, allow-lists, and the guarded resolver."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from hookrelay.net.guard import (
    METADATA_ADDRESSES,
    AddressRefusedError,
    GuardedResolver,
    NetworkPolicy,
    refusal_reason,
)


def policy(*networks: str) -> NetworkPolicy:
    return NetworkPolicy(ipaddress.ip_network(n) for n in networks)


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("10.0.0.5", "10.0.0.5 is a private address"),
        ("172.16.3.4", "172.16.3.4 is a private address"),
        ("192.168.1.1", "192.168.1.1 is a private address"),
        ("127.0.0.1", "127.0.0.1 is a loopback address"),
        ("127.255.0.9", "127.255.0.9 is a loopback address"),
        ("::1", "::1 is a loopback address"),
        ("0.0.0.0", "0.0.0.0 is the unspecified address"),
        ("::", ":: is the unspecified address"),
        ("169.254.169.254", "169.254.169.254 is a cloud metadata endpoint"),
        ("fd00:ec2::254", "fd00:ec2::254 is a cloud metadata endpoint"),
        ("169.254.1.2", "169.254.1.2 is a link-local address"),
        ("fe80::1", "fe80::1 is a link-local address"),
        ("fe80::1%eth0", "fe80::1%eth0 is a link-local address"),
        ("224.0.0.251", "224.0.0.251 is a multicast address"),
        ("ff02::1", "ff02::1 is a multicast address"),
        ("100.64.0.1", "100.64.0.1 is a shared (CGNAT) address"),
        ("100.127.255.254", "100.127.255.254 is a shared (CGNAT) address"),
        ("fd12:3456::1", "fd12:3456::1 is a private address"),
        ("240.0.0.1", "240.0.0.1 is a reserved address"),
        ("255.255.255.255", "255.255.255.255 is a reserved address"),
        ("fec0::1", "fec0::1 is a site-local address"),
        ("192.0.2.10", "192.0.2.10 is a special-purpose address"),
        ("198.18.0.1", "198.18.0.1 is a special-purpose address"),
        ("2001:db8::1", "2001:db8::1 is a special-purpose address"),
        ("2001:0:4136:e378::1", "2001:0:4136:e378::1 is a special-purpose address"),  # Teredo
        ("::ffff:10.0.0.1", "::ffff:10.0.0.1 is a private address (it carries 10.0.0.1)"),
        ("::ffff:127.0.0.1", "::ffff:127.0.0.1 is a loopback address (it carries 127.0.0.1)"),
        (
            "[::ffff:169.254.169.254]",
            "::ffff:169.254.169.254 is a cloud metadata endpoint (it carries 169.254.169.254)",
        ),
        ("64:ff9b::a00:1", "64:ff9b::a00:1 is a private address (it carries 10.0.0.1)"),
        ("2002:7f00:1::", "2002:7f00:1:: is a loopback address (it carries 127.0.0.1)"),
        ("::a00:1", "::a00:1 is a reserved address"),  # deprecated IPv4-compatible form
    ],
)
def test_non_public_addresses_are_refused_with_their_kind(host: str, reason: str) -> None:
    assert refusal_reason(host) == reason


@pytest.mark.parametrize(
    "host",
    ["8.8.8.8", "1.1.1.1", "93.184.215.14", "2606:4700:4700::1111", "[2a00:1450:4001::200e]"],
)
def test_public_addresses_are_allowed(host: str) -> None:
    assert refusal_reason(host) is None


@pytest.mark.parametrize("host", ["64:ff9b::808:808", "2002:808:808::1", "::ffff:8.8.8.8"])
def test_ipv6_forms_of_a_public_ipv4_address_are_allowed(host: str) -> None:
    assert refusal_reason(host) is None


def test_a_non_address_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        refusal_reason("example.com")


def test_an_allow_list_lets_its_networks_in_and_nothing_else() -> None:
    loopback = policy("127.0.0.0/8")
    assert loopback.refusal("127.0.0.1") is None
    assert loopback.refusal("::ffff:127.0.0.1") is None  # the same host, written as IPv6
    assert loopback.refusal("::1") == "::1 is a loopback address"
    assert loopback.refusal("10.0.0.1") == "10.0.0.1 is a private address"
    assert policy("10.1.0.0/16").refusal("10.2.0.1") == "10.2.0.1 is a private address"


def test_metadata_endpoints_need_an_entry_naming_exactly_them() -> None:
    broad = policy("0.0.0.0/0", "::/0", "169.254.0.0/16")
    assert broad.refusal("169.254.1.1") is None
    assert broad.refusal("10.0.0.1") is None
    for address in METADATA_ADDRESSES:
        assert broad.refusal(str(address)) == f"{address} is a cloud metadata endpoint"
    # ::/0 covers the mapped form, but must not let the endpoint in that way either
    assert broad.refusal("::ffff:169.254.169.254") is not None
    exact = policy("169.254.169.254/32")
    assert exact.refusal("169.254.169.254") is None
    assert exact.refusal("::ffff:169.254.169.254") is None
    assert exact.refusal("169.254.170.2") == "169.254.170.2 is a cloud metadata endpoint"


def test_policies_compare_by_their_networks() -> None:
    assert policy("10.0.0.0/8", "127.0.0.0/8") == policy("127.0.0.0/8", "10.0.0.0/8")
    assert len({policy("10.0.0.0/8"), policy("10.0.0.0/8"), NetworkPolicy()}) == 2


class ScriptedResolver(AbstractResolver):
    """Answers every lookup with the given addresses, like a DNS server under an attacker's
    control would (the rebinding case: a public name answering with private addresses)."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses
        self.lookups: list[str] = []
        self.closed = False

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups.append(host)
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in self.addresses
        ]

    async def close(self) -> None:
        self.closed = True


async def test_a_name_resolving_to_private_addresses_is_refused() -> None:
    inner = ScriptedResolver("10.0.0.5", "::ffff:169.254.169.254")
    resolver = GuardedResolver(NetworkPolicy(), inner)
    with pytest.raises(AddressRefusedError) as caught:
        await resolver.resolve("hooks.example.com", 443)
    assert caught.value.host == "hooks.example.com"
    assert caught.value.reasons == [
        "10.0.0.5 is a private address",
        "::ffff:169.254.169.254 is a cloud metadata endpoint (it carries 169.254.169.254)",
    ]
    assert inner.lookups == ["hooks.example.com"]


async def test_only_the_allowed_addresses_of_a_name_are_handed_to_the_connector() -> None:
    inner = ScriptedResolver("127.0.0.1", "93.184.215.14", "10.0.0.5", "2606:4700::1")
    resolver = GuardedResolver(NetworkPolicy(), inner)
    results = await resolver.resolve("mixed.example.com", 443)
    assert [r["host"] for r in results] == ["93.184.215.14", "2606:4700::1"]
    assert all(r["port"] == 443 for r in results)
    allowing = GuardedResolver(policy("10.0.0.0/8"), inner)
    results = await allowing.resolve("mixed.example.com", 443)
    assert [r["host"] for r in results] == ["93.184.215.14", "10.0.0.5", "2606:4700::1"]
    await resolver.close()
    assert inner.closed


async def test_the_system_resolver_answer_for_localhost_is_vetted() -> None:
    resolver = GuardedResolver(NetworkPolicy())
    try:
        with pytest.raises(AddressRefusedError, match="is a loopback address"):
            await resolver.resolve("localhost", 80)
        allowing = GuardedResolver(policy("127.0.0.0/8", "::1/128"))
        results = await allowing.resolve("localhost", 80)
        assert {r["host"] for r in results} <= {"127.0.0.1", "::1"}
        assert results
    finally:
        await resolver.close()
