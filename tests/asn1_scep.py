"""Teaches asn1crypto the SCEP attributes (RFC 8894 section 3.2.1), for tests only.

The server decodes and encodes pkiMessages with its own DER code (scep_ca.asn1.ber, scep_ca.asn1.der);
tests read its output back with asn1crypto as an independent decoder.

messageType, pkiStatus, failInfo and transactionID are PrintableString; the nonces are
16-byte OCTET STRINGs; failInfoText (RFC 8894 section 3.2.1.4) is a UTF8String.
asn1crypto keeps its attribute maps on classes, so registration is done once, at
import, and is idempotent.
"""

from __future__ import annotations

from asn1crypto import cms, core

OID_MESSAGE_TYPE = "2.16.840.1.113733.1.9.2"
OID_PKI_STATUS = "2.16.840.1.113733.1.9.3"
OID_FAIL_INFO = "2.16.840.1.113733.1.9.4"
OID_SENDER_NONCE = "2.16.840.1.113733.1.9.5"
OID_RECIPIENT_NONCE = "2.16.840.1.113733.1.9.6"
OID_TRANSACTION_ID = "2.16.840.1.113733.1.9.7"
OID_FAIL_INFO_TEXT = "1.3.6.1.5.5.7.24.1"


class SetOfPrintableString(core.SetOf):  # type: ignore[misc]
    _child_spec = core.PrintableString


class SetOfOctetString(core.SetOf):  # type: ignore[misc]
    _child_spec = core.OctetString


class SetOfUTF8String(core.SetOf):  # type: ignore[misc]
    _child_spec = core.UTF8String


_ATTRIBUTES = {
    OID_MESSAGE_TYPE: ("message_type", SetOfPrintableString),
    OID_PKI_STATUS: ("pki_status", SetOfPrintableString),
    OID_FAIL_INFO: ("fail_info", SetOfPrintableString),
    OID_SENDER_NONCE: ("sender_nonce", SetOfOctetString),
    OID_RECIPIENT_NONCE: ("recipient_nonce", SetOfOctetString),
    OID_TRANSACTION_ID: ("transaction_id", SetOfPrintableString),
    OID_FAIL_INFO_TEXT: ("fail_info_text", SetOfUTF8String),
}


def _register() -> None:
    for oid, (name, spec) in _ATTRIBUTES.items():
        cms.CMSAttributeType._map[oid] = name
        cms.CMSAttribute._oid_specs[name] = spec
    # asn1crypto caches the reverse map lazily; reset it so new names resolve.
    cms.CMSAttributeType._reverse_map = None


_register()
