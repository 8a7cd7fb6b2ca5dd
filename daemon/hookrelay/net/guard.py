"""The SSRF guard: which addresses a webhook may be sent to, vetted where the connection is made.

A hook's URL comes from configuration, but the address behind its host name comes from DNS at
send time, and DNS can answer anything (a name that resolved to a public address at load time
may resolve to 127.0.0.1 or to the cloud metadata endpoint a minute later: DNS rebinding). So
the vetting happens in the connection path: :class:`GuardedResolver` is the connector's
resolver; it resolves, drops every address not allowed, and hands the connector only the
vetted addresses, which are the ones it connects to (no second lookup). When nothing is left
it raises :class:`AddressRefusedError`. aiohttp does not ask the resolver about IP literals in the
URL (``http://10.0.0.5/``), so the sender vets those with :meth:`NetworkPolicy.refusal` itself.

Refused by default (``refusal_reason`` says which applies, first match wins):

- unspecified (``0.0.0.0``, ``::``), loopback (127.0.0.0/8, ``::1``);
- cloud metadata endpoints (:data:`METADATA_ADDRESSES`);
- link-local (169.254.0.0/16, fe80::/10), multicast (224.0.0.0/4, ff00::/8);
- shared address space / carrier-grade NAT (100.64.0.0/10, RFC 6598);
- private (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, unique-local fc00::/7);
- reserved (240.0.0.0/4, broadcast, IPv6 reserved blocks), deprecated site-local fec0::/10;
- every other special-purpose block that Python's ``ipaddress`` does not call global
  (documentation, benchmarking, IETF protocol assignments, Teredo 2001::/32, ...).

IPv6 forms that carry an IPv4 address are judged by that IPv4 address: IPv4-mapped
(``::ffff:10.0.0.1``), NAT64 with the well-known prefix (``64:ff9b::/96``, RFC 6052) and
6to4 (``2002::/16``, RFC 3056). A NAT64 or 6to4 address embedding a public IPv4 address is
allowed (it is how IPv6-only hosts reach IPv4 endpoints); the local-use NAT64 prefix
64:ff9b:1::/48 and Teredo are refused (special-purpose, and a tunnel could lead anywhere).

Opt-outs are allow-lists of networks (``http.allow_networks`` for every hook, a hook's
``allow_networks`` for that hook): an address inside one is allowed whatever its kind, with
one exception: a metadata endpoint is only allowed by an entry that names exactly that
address (``169.254.169.254/32``), never by a broader range such as ``169.254.0.0/16`` or
``0.0.0.0/0``. A metadata service hands out cloud credentials; allowing "private networks"
must not silently include it.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Final

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

__all__ = [
    "METADATA_ADDRESSES",
    "Address",
    "AddressRefusedError",
    "GuardedResolver",
    "Network",
    "NetworkPolicy",
    "refusal_reason",
]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA_ADDRESSES: Final[frozenset[Address]] = frozenset(
    ipaddress.ip_address(text)
    for text in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle instance metadata
        "169.254.170.2",  # AWS ECS task metadata and credentials
        "169.254.170.23",  # AWS EKS Pod Identity agent
        "fd00:ec2::254",  # AWS instance metadata over IPv6
        "fd00:ec2::23",  # AWS EKS Pod Identity agent over IPv6
        "100.100.100.200",  # Alibaba Cloud instance metadata
        "168.63.129.16",  # Azure WireServer (a public address, but only ever the host's)
    )
)
"""Cloud metadata and credential endpoints (from each provider's documentation): refused
unless an allow-list entry names the exact address."""

_CGNAT: Final = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64_WELL_KNOWN: Final = ipaddress.IPv6Network("64:ff9b::/96")
_PRIVATE: Final[tuple[Network, ...]] = tuple(
    ipaddress.ip_network(text)
    for text in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)


def _embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped, NAT64 (well-known prefix) or 6to4 address reaches."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64_WELL_KNOWN:
        return ipaddress.IPv4Address(address.packed[-4:])
    return address.sixtofour


def _kind(address: Address) -> str | None:
    """What makes ``address`` non-public, as a phrase (``"a private address"``), or ``None``."""
    checks: tuple[tuple[bool, str], ...] = (
        (address.is_unspecified, "the unspecified address"),
        (address.is_loopback, "a loopback address"),
        (address in METADATA_ADDRESSES, "a cloud metadata endpoint"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (
            isinstance(address, ipaddress.IPv4Address) and address in _CGNAT,
            "a shared (CGNAT) address",
        ),
        (any(address in network for network in _PRIVATE), "a private address"),
        (address.is_reserved, "a reserved address"),
        (
            isinstance(address, ipaddress.IPv6Address) and address.is_site_local,
            "a site-local address",
        ),
        (address.is_private or not address.is_global, "a special-purpose address"),
    )
    for applies, kind in checks:
        if applies:
            return kind
    return None


def _parse(host: str) -> Address:
    """An address from resolver output or a URL host: IPv6 brackets and a zone id removed."""
    return ipaddress.ip_address(host.strip("[]").partition("%")[0])


class NetworkPolicy:
    """Which addresses may be connected to: everything public, plus ``allow`` networks.

    ``allow`` is an iterable of networks (``ipaddress`` objects); an entry covering a metadata
    endpoint allows it only when the entry is that single address. Instances are immutable and
    hashable, so the sender keeps one connection pool per distinct policy.
    """

    __slots__ = ("_allow", "_exact")

    def __init__(self, allow: Iterable[Network] = ()) -> None:
        self._allow: frozenset[Network] = frozenset(allow)
        self._exact: frozenset[Address] = frozenset(
            net.network_address for net in self._allow if net.num_addresses == 1
        )

    @property
    def allow(self) -> frozenset[Network]:
        """The allow-listed networks."""
        return self._allow

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NetworkPolicy) and other._allow == self._allow

    def __hash__(self) -> int:
        return hash(self._allow)

    def __repr__(self) -> str:
        return f"NetworkPolicy({sorted(map(str, self._allow))})"

    def _allowed(self, address: Address) -> bool:
        if address in METADATA_ADDRESSES:
            return address in self._exact
        return any(address.version == net.version and address in net for net in self._allow)

    def refusal(self, host: str) -> str | None:
        """Why connecting to ``host`` (an IP address as text) is refused, or ``None``.

        The reason reads ``"10.0.0.5 is a private address"``; an IPv6 form carrying an IPv4
        address names both. Raises ``ValueError`` when ``host`` is not an IP address.
        """
        address = _parse(host)
        shown = host.strip("[]")
        inner = _embedded_ipv4(address)
        if inner is None:
            kind = None if self._allowed(address) else _kind(address)
            return None if kind is None else f"{shown} is {kind}"
        # An outer allow entry (say ::/0) must not let a metadata endpoint in through its
        # IPv4-mapped form: only the exact entry allows one, however it is written.
        outer_allowed = inner not in METADATA_ADDRESSES and self._allowed(address)
        if outer_allowed or self._allowed(inner):
            return None
        kind = _kind(inner)
        return None if kind is None else f"{shown} is {kind} (it carries {inner})"


def refusal_reason(host: str, policy: NetworkPolicy | None = None) -> str | None:
    """Why connecting to the IP address ``host`` is refused under ``policy`` (default: no
    allow-list), or ``None`` when it is allowed. Raises ``ValueError`` for a non-address."""
    return (policy or NetworkPolicy()).refusal(host)


class AddressRefusedError(OSError):
    """Every address a host name resolved to is refused by the SSRF guard.

    ``host`` is the name looked up, ``reasons`` one sentence per refused address. It is an
    ``OSError`` because aiohttp's connector turns resolver ``OSError``s into a
    ``ClientConnectorDNSError`` (keeping this one as ``os_error`` and ``__cause__``), which the
    sender recognises and turns into a permanent failure.
    """

    def __init__(self, host: str, reasons: list[str]) -> None:
        super().__init__(f"{host}: {'; '.join(reasons)}")
        self.host = host
        self.reasons = reasons


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that only ever returns addresses ``policy`` allows.

    Resolution is delegated to ``inner`` (default aiohttp's ``ThreadedResolver``, i.e. the
    system's ``getaddrinfo``); results are filtered in order. Raises :class:`AddressRefusedError`
    when addresses were found but none is allowed; resolution errors (``socket.gaierror``)
    pass through unchanged.
    """

    def __init__(self, policy: NetworkPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """``inner``'s results for ``host`` less the refused ones; see the class docstring."""
        if self._inner is None:
            self._inner = ThreadedResolver()  # needs the running loop, so made on first use
        results = await self._inner.resolve(host, port, family)
        allowed: list[ResolveResult] = []
        reasons: list[str] = []
        for result in results:
            reason = self.policy.refusal(result["host"])
            if reason is None:
                allowed.append(result)
            elif reason not in reasons:
                reasons.append(reason)
        if not allowed and reasons:
            raise AddressRefusedError(host, reasons)
        return allowed

    async def close(self) -> None:
        """Close the inner resolver."""
        if self._inner is not None:
            await self._inner.close()
