"""Which brokers the adapter reads and which namespaces may read each one.

Single-broker mode (``--broker-url``): one broker named ``default`` for every namespace. A config file
(``--config``) lists several::

    brokers:
      - name: platform                 # the ``broker`` label of the adapter's own metrics
        url: redis://redis.lensing:6379/0   # or urlFromEnv: CELERY_BROKER_URL (keeps secrets out of the file)
        transportOptions: {global_keyprefix: "lens:"}
        queues: [analyses]             # optional; default: discovered from the broker
        namespaces: [lensing, default] # "*" = every namespace no other broker names

A namespace bound to no broker gets 404 for its metrics; a namespace bound to two is a config error.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ANY_NAMESPACE = "*"
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_BROKER_NAME = re.compile(r"^[A-Za-z0-9][-A-Za-z0-9_.]{0,62}$")
#: brokers here; customMetrics and externalMetrics (PromQL rules) are read by adapter.providers.rules
TOP_LEVEL_KEYS = {"brokers", "customMetrics", "externalMetrics"}
_KEYS = {"name", "url", "urlFromEnv", "transportOptions", "queues", "namespaces"}


class ConfigError(ValueError):
    """The config file cannot be used; the message names the file, the field and what is accepted."""


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    name: str
    url: str
    transport_options: tuple[str, ...] = ()  # KEY=VALUE, as --broker-transport-option takes them
    queues: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = (ANY_NAMESPACE,)


def single_broker(url: str, transport_options: Sequence[str], queues: Sequence[str]) -> BrokerConfig:
    return BrokerConfig("default", url, tuple(transport_options), tuple(queues))


def _option_items(where: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, Mapping):
        return tuple(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in value.items())
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"{where}.transportOptions: expected a mapping such as {{global_keyprefix: 'lens:'}}")


def _names(where: str, value: Any, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}.{field}: expected a list of names, got {value!r}")
    return tuple(dict.fromkeys(value))


def parse_config(data: Any, source: str = "config") -> list[BrokerConfig]:
    if not isinstance(data, Mapping) or not isinstance(data.get("brokers"), list) or not data["brokers"]:
        raise ConfigError(f"{source}: expected a mapping with a non-empty list 'brokers:' (see docs/adapter.md)")
    unknown_top = set(data) - TOP_LEVEL_KEYS
    if unknown_top:
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(sorted(unknown_top))} (accepted: {', '.join(sorted(TOP_LEVEL_KEYS))})"
        )
    brokers: list[BrokerConfig] = []
    owner: dict[str, str] = {}
    for index, item in enumerate(data["brokers"]):
        where = f"{source}: brokers[{index}]"
        if not isinstance(item, Mapping):
            raise ConfigError(f"{where}: expected a mapping with name, url and namespaces")
        unknown = set(item) - _KEYS
        if unknown:
            raise ConfigError(
                f"{where}: unknown key(s) {', '.join(sorted(unknown))} (accepted: {', '.join(sorted(_KEYS))})"
            )
        name = item.get("name")
        if not isinstance(name, str) or not _BROKER_NAME.match(name):
            raise ConfigError(f"{where}.name: expected a short name of letters, digits, '-', '_', '.', got {name!r}")
        if any(b.name == name for b in brokers):
            raise ConfigError(f"{where}.name: {name!r} is used twice")
        url = item.get("url")
        env = item.get("urlFromEnv")
        if bool(url) == bool(env):
            raise ConfigError(f"{where}: give exactly one of url and urlFromEnv")
        if env:
            url = os.environ.get(str(env), "")
            if not url:
                raise ConfigError(f"{where}.urlFromEnv: environment variable {env} is not set")
        if not isinstance(url, str):
            raise ConfigError(f"{where}.url: expected a broker URL string")
        namespaces = _names(where, item.get("namespaces"), "namespaces")
        if not namespaces:
            raise ConfigError(f"{where}.namespaces: list the namespaces that may read this broker, or '*'")
        for namespace in namespaces:
            if namespace != ANY_NAMESPACE and not _DNS1123_LABEL.match(namespace):
                raise ConfigError(f"{where}.namespaces: {namespace!r} is not a namespace name (or '*')")
            if namespace in owner:
                raise ConfigError(
                    f"{where}.namespaces: {namespace!r} is already bound to broker {owner[namespace]!r}; "
                    "a namespace reads one broker"
                )
            owner[namespace] = name
        brokers.append(
            BrokerConfig(
                name,
                url,
                _option_items(where, item.get("transportOptions")),
                _names(where, item.get("queues"), "queues"),
                namespaces,
            )
        )
    return brokers


def read_config(path: str) -> Any:
    """The config file's document (YAML or JSON), for every section's parser."""
    try:
        return yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"--config {path}: not UTF-8 text (byte {exc.start}); write the file as UTF-8") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {path}: not YAML: {str(exc).splitlines()[0]}") from None


def load_config(path: str) -> list[BrokerConfig]:
    return parse_config(read_config(path), path)
