"""Strict JSON Schema for the part of cert-manager's v1 API the cert-manager overlay uses.

kubernetes-validate knows only built-in kinds; without this the Issuer and Certificate objects
would go unchecked. Every object level rejects unknown fields, as `--strict` does for built-ins.
The field names and enums follow cert-manager's v1 API reference.
"""

from __future__ import annotations

from typing import Any

_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_STRINGS = {"type": "array", "items": {"type": "string"}}

_METADATA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "namespace": {"type": "string"},
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
    },
}

_KEY_USAGES = [
    "signing", "digital signature", "content commitment", "key encipherment", "key agreement",
    "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any",
    "server auth", "client auth", "code signing", "email protection", "s/mime",
    "ipsec end system", "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing",
    "microsoft sgc", "netscape sgc",
]

_CERTIFICATE_SPEC = {
    "type": "object",
    "additionalProperties": False,
    "required": ["secretName", "issuerRef"],
    "properties": {
        "secretName": {"type": "string", "minLength": 1},
        "commonName": {"type": "string"},
        "dnsNames": _STRINGS,
        "ipAddresses": _STRINGS,
        "uris": _STRINGS,
        "isCA": {"type": "boolean"},
        "duration": {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"},
        "renewBefore": {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"},
        "usages": {"type": "array", "items": {"enum": _KEY_USAGES}},
        "privateKey": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
                "size": {"type": "integer"},
                "encoding": {"enum": ["PKCS1", "PKCS8"]},
                "rotationPolicy": {"enum": ["Never", "Always"]},
            },
        },
        "issuerRef": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "kind": {"type": "string"},
                "group": {"type": "string"},
            },
        },
        "secretTemplate": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"labels": _STRING_MAP, "annotations": _STRING_MAP},
        },
    },
}

_ISSUER_SPEC = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "maxProperties": 1,
    "properties": {
        "selfSigned": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"crlDistributionPoints": _STRINGS},
        },
        "ca": {
            "type": "object",
            "additionalProperties": False,
            "required": ["secretName"],
            "properties": {
                "secretName": {"type": "string", "minLength": 1},
                "crlDistributionPoints": _STRINGS,
                "ocspServers": _STRINGS,
                "issuingCertificateURLs": _STRINGS,
            },
        },
    },
}


def _object(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "cert-manager.io/v1"},
            "kind": {"const": kind},
            "metadata": _METADATA,
            "spec": spec,
        },
    }


SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("cert-manager.io/v1", "Certificate"): _object("Certificate", _CERTIFICATE_SPEC),
    ("cert-manager.io/v1", "Issuer"): _object("Issuer", _ISSUER_SPEC),
    ("cert-manager.io/v1", "ClusterIssuer"): _object("ClusterIssuer", _ISSUER_SPEC),
}
