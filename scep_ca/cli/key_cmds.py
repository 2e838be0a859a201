"""``scep-ca keys list`` and ``scep-ca keys import``: where the server's private keys live."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from audit.events import Event
from config.files import write_private
from scep_ca.cli.audit_cmds import record
from scep_ca.cli.context import CliError, ca_passphrase, config_from_args, key_token, print_table
from scep_ca.pki.ca import CA_KEY_FILE, RA_ENC_KEY_FILE, RA_KEY_FILE, CAIdentity
from scep_ca.pki.ca_set import NEXT_DIR, load_ca_set
from scep_ca.pki.keys import describe_key
from scep_ca.pki.pkcs11_keys import URI_SUFFIX, Pkcs11Key, subject_key_id

_ROLES = (("CA", CA_KEY_FILE), ("RA", RA_KEY_FILE), ("encryption RA", RA_ENC_KEY_FILE))


def _rows(ca: CAIdentity, where: str, data_dir: Path) -> list[list[object]]:
    rows: list[list[object]] = []
    for (role, file_name), key in zip(_ROLES, (ca.key, ca.ra_key, ca.enc_key), strict=True):
        if key is None:
            continue
        label = key.ref.label if isinstance(key, Pkcs11Key) else file_name
        rows.append(
            [
                f"{where} {role}",
                label,
                subject_key_id(key.public_key()).hex(),
                key.key_size,
                describe_key(key, str(data_dir / file_name)),
            ]
        )
    return rows


def cmd_keys_list(args: argparse.Namespace) -> int:
    """Which keys the server uses: role, label, id (SHA-1 of the public key, the SKI), size, where."""
    config = config_from_args(args)
    cas = load_ca_set(config.data_dir, ca_passphrase(config), key_token(config))
    rows = _rows(cas.current, "current", config.data_dir)
    if cas.next is not None:
        rows += _rows(cas.next, "next", config.data_dir / NEXT_DIR)
    for previous in cas.previous:
        rows += _rows(previous, "previous", config.data_dir)
    print_table(["key", "label", "id", "bits", "where"], rows)
    return 0


def cmd_keys_import(args: argparse.Namespace) -> int:
    """Move a file key of this data directory into the token; the file is removed afterwards."""
    config = config_from_args(args)
    token = key_token(config)
    if token is None:
        raise CliError("keys import needs keys.pkcs11 (module, token_label, pin_env or pin_file)")
    file_name = dict(_ROLES_BY_NAME)[args.key]
    path = config.data_dir / file_name
    if not path.exists():
        raise CliError(f"there is no key file {path}")
    passphrase = ca_passphrase(config) if config.ca.passphrase_env else None
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=passphrase)
    except (TypeError, ValueError) as exc:
        raise CliError(f"cannot load {path} (wrong or missing passphrase, or not a key)") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CliError(f"{path} is not an RSA key")
    print(
        f"WARNING: this key existed outside the token ({path}); copies of it (backups, other hosts) are "
        "not protected by the token. Prefer a new key generated in the token (`scep-ca ca rollover`, "
        "`scep-ca ra create`).",
        file=sys.stderr,
    )
    _, ref = token.import_key(key, args.label or f"{config.ca.subject} {args.key}")
    # 0600 like the key file it replaces: whoever could rewrite it would choose the signing key.
    write_private(path.with_name(path.name + URI_SUFFIX), (ref.uri() + "\n").encode("ascii"))
    path.unlink()
    record(
        config,
        Event.KEY_IMPORTED,
        f"key/{args.key}",
        {"token": ref.token_label, "label": ref.label, "id": ref.key_id.hex()},
    )
    print(f"imported {path} into token {ref.token_label} as {ref.label!r} (id {ref.key_id.hex()}); removed the file")
    return 0


_ROLES_BY_NAME = (("ca", CA_KEY_FILE), ("ra", RA_KEY_FILE), ("ra-enc", RA_ENC_KEY_FILE))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("keys", help="the CA and RA private keys: files or a PKCS#11 token")
    ksub = p.add_subparsers(dest="keys_cmd", required=True)
    c = ksub.add_parser("list", parents=[common], help="which keys the server uses and where they live")
    c.set_defaults(func=cmd_keys_list)
    c = ksub.add_parser("import", parents=[common], help="import a key file into the token (keys.pkcs11)")
    c.add_argument("key", choices=[name for name, _ in _ROLES_BY_NAME], help="which key file of the data directory")
    c.add_argument("--label", help="CKA_LABEL in the token")
    c.set_defaults(func=cmd_keys_import)
