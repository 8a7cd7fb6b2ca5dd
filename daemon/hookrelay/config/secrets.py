"""Secrets kept out of the YAML: signing key files (of hooks and of ingest sources), the admin and
batch token files, the SASL password file,
and the certificate and key file paths (made absolute, relative to the file naming them).
Problems name the file, never its content.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from hookrelay.config.models import KAFKA_TLS_FILE_KEYS
from hookrelay.config.source_map import KeyPath, SourceMap, Where


def hook_mappings(data: Mapping[str, Any]) -> Iterator[tuple[int, dict[str, Any]]]:
    hooks = data.get("hooks")
    if isinstance(hooks, list):
        for index, hook in enumerate(hooks):
            if isinstance(hook, dict):
                yield index, hook


def ingest_source_mappings(data: Mapping[str, Any]) -> Iterator[tuple[int, dict[str, Any]]]:
    ingest = data.get("ingest")
    sources = ingest.get("sources") if isinstance(ingest, dict) else None
    if isinstance(sources, list):
        for index, source in enumerate(sources):
            if isinstance(source, dict):
                yield index, source


def _ingest_batch(data: Mapping[str, Any]) -> Any:
    ingest = data.get("ingest")
    return ingest.get("batch") if isinstance(ingest, dict) else None


def _strip_one_newline(text: str) -> str:
    for ending in ("\r\n", "\n"):
        if text.endswith(ending):
            return text[: -len(ending)]
    return text


def _read_key_file(file: Path, what: str = "signing key") -> tuple[str | None, str | None]:
    """``(secret, None)`` or ``(None, problem)``; the problem names the file (as the ``what``
    file, e.g. "signing key file"), never its content."""
    try:
        text = file.read_bytes().decode("utf-8")
    except OSError as e:
        return None, f"cannot read {what} file {file}: {e.strerror or type(e).__name__}"
    except UnicodeDecodeError:
        return None, f"{what} file {file} is not UTF-8 text"
    key = _strip_one_newline(text)
    if not key:
        return None, f"{what} file {file} is empty"
    return key, None


class SecretFiles:
    """The secret-file steps of one load, mixed into the loader: it provides ``source``, the
    ``failed`` key paths and ``report``."""

    source: SourceMap
    failed: set[KeyPath]

    def report(self, path: KeyPath, message: str, where: Where | None = None) -> None:
        raise NotImplementedError

    def absolute_tls_paths(self, data: dict[str, Any]) -> None:
        """Make ``http.ca_file`` and the ``tls`` files of each hook and of ``ingest`` absolute,
        relative to the YAML file naming them (the hooks file may live elsewhere than the main
        file)."""
        places: list[tuple[Any, KeyPath]] = [(data.get("http"), ("http",))]
        places.extend((hook.get("tls"), ("hooks", i, "tls")) for i, hook in hook_mappings(data))
        ingest = data.get("ingest")
        if isinstance(ingest, dict):
            places.append((ingest.get("tls"), ("ingest", "tls")))
        for mapping, path in places:
            if not isinstance(mapping, dict):
                continue
            for key in ("ca_file", "cert_file", "key_file"):
                relative = mapping.get(key)
                if isinstance(relative, str) and relative:
                    where = self.source.positions[(*path, key)]
                    mapping[key] = os.path.abspath(Path(where.file).parent / relative)

    def note_inline_secrets(self, data: dict[str, Any]) -> None:
        secrets: list[tuple[Any, KeyPath]] = [
            (hook, ("hooks", index, "signing_key")) for index, hook in hook_mappings(data)
        ]
        for index, hook in hook_mappings(data):
            keys = hook.get("signing_keys")
            if isinstance(keys, list):
                # Each listed key is looked up in an index → key mapping, like a named one.
                keys_path: KeyPath = ("hooks", index, "signing_keys")
                listed = dict(enumerate(keys))
                secrets.extend((listed, (*keys_path, i)) for i in listed)
        secrets.append((data.get("admin"), ("admin", "token")))
        secrets.extend(
            (source, ("ingest", "sources", index, "signing_key"))
            for index, source in ingest_source_mappings(data)
        )
        secrets.append((_ingest_batch(data), ("ingest", "batch", "token")))
        secrets.append((data.get("kafka"), ("kafka", "sasl_password")))
        for mapping, path in secrets:
            if (
                isinstance(mapping, dict)
                and isinstance(mapping.get(path[-1]), str)
                and path not in self.source.from_environment
            ):
                self.source.inline_secrets.add(path)

    def ingest_files(self, data: dict[str, Any]) -> None:
        """Read each ingest source's ``signing_key_file`` and the batch API's ``token_file``."""
        for index, source in ingest_source_mappings(data):
            if "signing_key_file" in source:
                path: KeyPath = ("ingest", "sources", index)
                self.read_secret_file(source, path, "signing_key", "signing key")
                if "signing_key" not in source:  # reported; "key missing" would be noise
                    self.failed.add((*path, "signing_key"))
        batch = _ingest_batch(data)
        if isinstance(batch, dict) and "token_file" in batch:
            self.read_secret_file(batch, ("ingest", "batch"), "token", "batch token")
            if "token" not in batch:
                self.failed.add(("ingest", "batch", "token"))

    def kafka_files(self, data: dict[str, Any], main_file: Path) -> None:
        """Read ``kafka.sasl_password_file``; make the ``kafka.ssl_*_file`` paths absolute,
        relative to the main file (the client loads them at each connection set-up)."""
        kafka = data.get("kafka")
        if not isinstance(kafka, dict):
            return
        if "sasl_password_file" in kafka:
            self.read_secret_file(kafka, ("kafka",), "sasl_password", "SASL password")
            if "sasl_password" not in kafka:  # reported; "password missing" would be noise
                self.failed.add(("kafka", "sasl_password"))
        for key in KAFKA_TLS_FILE_KEYS:
            relative = kafka.get(key)
            if isinstance(relative, str) and relative:
                kafka[key] = os.path.abspath(main_file.parent / relative)

    def read_signing_key_files(self, hook: dict[str, Any], path: KeyPath) -> None:
        """Replace a hook's ``signing_key_files`` list by ``signing_keys`` read from those files
        (relative to the YAML file naming them), or report why not, naming the file and never
        its content. Each key's position is its file's item, so later issues (a duplicate, a
        key that is no Standard Webhooks secret) point at the right line."""
        files_path = (*path, "signing_key_files")
        relatives = hook.pop("signing_key_files")
        if "signing_keys" in hook:
            self.report(files_path, "use either signing_keys or signing_key_files, not both")
            return
        if not isinstance(relatives, list) or not relatives:
            self.report(files_path, "expected a non-empty list of file paths")
            return
        keys: list[str] = []
        for index, relative in enumerate(relatives):
            item = (*files_path, index)
            where = self.source.positions[item]
            if not isinstance(relative, str):
                self.report(item, "expected a string; quote the value")
                continue
            if item in self.failed:
                continue
            key, problem = _read_key_file(Path(where.file).parent / relative, "signing key")
            if problem is not None or key is None:
                self.report(item, problem or "")
                continue
            self.source.positions[(*path, "signing_keys", len(keys))] = where
            keys.append(key)
        if len(keys) == len(relatives):
            self.source.positions[(*path, "signing_keys")] = self.source.positions[files_path]
            hook["signing_keys"] = keys

    def read_secret_file(self, mapping: dict[str, Any], path: KeyPath, key: str, what: str) -> None:
        """Replace ``<key>_file`` in ``mapping`` (at ``path``) by ``key`` read from that file
        (relative to the YAML file naming it), or report why not; problems call the file the
        ``what`` file and never quote its content."""
        file_key = f"{key}_file"
        file_path = (*path, file_key)
        relative = mapping.pop(file_key)
        where = self.source.positions[file_path]
        if key in mapping:
            self.report(file_path, f"use either {key} or {file_key}, not both")
        elif not isinstance(relative, str):
            self.report(file_path, "expected a string; quote the value")
        elif file_path not in self.failed:
            secret, problem = _read_key_file(Path(where.file).parent / relative, what)
            if problem is not None:
                self.report(file_path, problem)
                return
            mapping[key] = secret
            self.source.positions[(*path, key)] = where
