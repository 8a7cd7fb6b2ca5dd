"""Configuration of the SSRF guard (http.allow_networks, a hook's allow_networks) and of TLS
(http.ca_file, a hook's tls): parsing, refusals naming file, line and key, check warnings."""

from __future__ import annotations

import ipaddress
import textwrap
from pathlib import Path

import pytest
import trustme

from hookrelay.config import config_warnings, load_settings
from hookrelay.errors import ConfigError


def write(directory: Path, text: str) -> Path:
    path = directory / "hookrelay.yaml"
    path.write_text(text, "utf-8")
    return path


def refusals(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    return [str(issue) for issue in caught.value.issues]


def hook_with(key: str, value: str) -> str:
    """A hooks section with one https hook whose ``key`` is ``value`` (line 5)."""
    return textwrap.dedent(f"""\
        hooks:
          - id: h
            events: ["*"]
            url: https://hooks.example.com/in
            {key}: {value}
        """)


def one_hook(allow: str = "[]") -> str:
    return hook_with("allow_networks", allow)


def test_allow_lists_are_empty_by_default(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, one_hook()))
    assert settings.http.allow_networks == ()
    assert settings.hooks[0].allow_networks == ()


def test_networks_and_single_addresses_are_read_as_networks(tmp_path: Path) -> None:
    http = 'http:\n  allow_networks: [127.0.0.0/8, "10.1.2.3", "fd00::/8"]\n'
    path = write(tmp_path, http + one_hook('["169.254.169.254"]'))
    settings = load_settings(path)
    assert settings.http.allow_networks == (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("10.1.2.3/32"),
        ipaddress.ip_network("fd00::/8"),
    )
    assert settings.hooks[0].allow_networks == (ipaddress.ip_network("169.254.169.254/32"),)
    assert settings.model_dump(mode="json")["http"]["allow_networks"] == [
        "127.0.0.0/8",
        "10.1.2.3/32",
        "fd00::/8",
    ]


def test_bad_networks_are_refused_naming_file_line_and_key(tmp_path: Path) -> None:
    http = "http:\n  allow_networks:\n    - 10.0.0.1/8\n    - not-a-network\n    - 5\n"
    path = write(tmp_path, http)
    assert refusals(path) == [
        f"{path}:3: http.allow_networks[0]: host bits set: expected the network's first "
        "address, as in 10.0.0.0/8",
        f"{path}:4: http.allow_networks[1]: expected a network in CIDR notation "
        "(10.0.0.0/8, fd00::/8) or one address",
        f"{path}:5: http.allow_networks[2]: expected a string such as 10.0.0.0/8",
    ]


@pytest.mark.parametrize(
    ("allow", "warning"),
    [
        ("0.0.0.0/0", "0.0.0.0/0 is very broad"),
        ("::/0", "::/0 is very broad"),
        ("10.0.0.0/7", "10.0.0.0/7 is very broad"),
        ("169.254.0.0/16", "169.254.0.0/16 includes link-local addresses"),
        ("fe80::/64", "fe80::/64 includes link-local addresses"),
        ("169.254.169.254/32", "169.254.169.254/32 is a cloud metadata endpoint"),
    ],
)
def test_check_warns_about_risky_allow_lists(tmp_path: Path, allow: str, warning: str) -> None:
    path = write(tmp_path, one_hook(f'["{allow}"]'))
    [line] = config_warnings(load_settings(path))
    assert line.startswith(f"{path}:5: hooks[0].allow_networks[0]: {warning}")


def test_check_is_quiet_about_narrow_allow_lists(tmp_path: Path) -> None:
    path = write(tmp_path, "http:\n  allow_networks: [127.0.0.0/8, 10.20.0.0/16]\n" + one_hook())
    assert config_warnings(load_settings(path)) == []


def tls_hook(tls: str) -> str:
    return hook_with("tls", tls)


def test_tls_files_are_read_relative_to_the_file_naming_them(tmp_path: Path) -> None:
    ca = trustme.CA()
    (tmp_path / "pki").mkdir()
    ca.cert_pem.write_to_path(str(tmp_path / "pki" / "ca.pem"))
    ca.issue_cert("hookrelay").private_key_and_cert_chain_pem.write_to_path(
        str(tmp_path / "pki" / "client.pem")
    )
    path = write(tmp_path, tls_hook("{ca_file: pki/ca.pem, cert_file: pki/client.pem}"))
    tls = load_settings(path).hooks[0].tls
    assert tls is not None
    assert (tls.ca_file, tls.cert_file) == (
        str(tmp_path / "pki" / "ca.pem"),
        str(tmp_path / "pki" / "client.pem"),
    )


def test_unusable_tls_files_are_refused_naming_file_line_and_key(tmp_path: Path) -> None:
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    path = write(tmp_path, "http:\n  ca_file: missing.pem\n" + tls_hook("{ca_file: junk.pem}"))
    assert refusals(path) == [
        f"{path}:2: http.ca_file: cannot read CA file {tmp_path / 'missing.pem'}: "
        "No such file or directory",
        f"{path}:7: hooks[0].tls.ca_file: CA file {tmp_path / 'junk.pem'} holds no usable "
        "PEM certificate",
    ]


def test_a_client_key_that_does_not_fit_its_certificate_is_refused(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca.issue_cert("a").cert_chain_pems[0].write_to_path(str(tmp_path / "a.pem"))
    ca.issue_cert("b").private_key_pem.write_to_path(str(tmp_path / "b.key"))
    path = write(tmp_path, tls_hook("{cert_file: a.pem, key_file: b.key}"))
    [issue] = refusals(path)
    assert issue.startswith(f"{path}:5: hooks[0].tls.cert_file: cannot use {tmp_path / 'a.pem'}")
    assert "unencrypted PEM private key" in issue


def test_a_key_file_needs_its_certificate(tmp_path: Path) -> None:
    path = write(tmp_path, tls_hook("{key_file: client.key}"))
    assert refusals(path) == [
        f"{path}:5: hooks[0].tls.key_file: expected cert_file with it (the key's certificate)"
    ]
