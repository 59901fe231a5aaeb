"""Manage tenants' API keys from a shell, against the database the app config names.

    image-service-keys --config configs/production.yaml create --tenant acme --name crm \\
        --scopes generate,edit [--models sd-tiny,z-image-tiny] [--expires-in-days 90]
    image-service-keys --config ... list [--tenant acme] [--json]
    image-service-keys --config ... revoke <prefix>
    image-service-keys --config ... rotate <prefix> [--old-expires-in-days 7]

`create` and `rotate` print the new key once on stdout (nothing else goes there); it is
stored only as a peppered hash. The pepper comes from the environment variable the
config's `auth.pepper_env` names, the same one the Gateway reads.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from serve_app import environment
from serve_app.config import AppConfig
from serve_app.security.key_store import IssuedKey, KeyNotFound, KeyStore, expiry_in
from serve_app.security.keys import ApiKeyRecord, KeyHasher, pepper_from_environment
from serve_app.security.scopes import SCOPES


def app_config(path: Path, app_name: str | None) -> AppConfig:
    """The `args` of one application in a Serve config file (the first, unless named)."""
    serve_config = yaml.safe_load(path.read_text())
    apps = serve_config.get("applications", [])
    chosen = [a for a in apps if app_name is None or a.get("name") == app_name]
    if not chosen:
        raise SystemExit(f"no application {app_name or '(any)'} in {path}")
    return AppConfig.model_validate(chosen[0].get("args", {}))


def _csv(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _scopes(value: str) -> list[str]:
    scopes = _csv(value)
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise argparse.ArgumentTypeError(f"scopes are a comma list of {', '.join(SCOPES)}")
    return scopes


def _row(record: ApiKeyRecord) -> dict[str, object]:
    def when(value):
        return value.isoformat(timespec="seconds") if value else None

    return {
        "prefix": record.prefix,
        "tenant": record.tenant,
        "name": record.name,
        "scopes": sorted(record.scopes),
        "models": sorted(record.models) if record.models is not None else "all",
        "created_at": when(record.created_at),
        "expires_at": when(record.expires_at),
        "revoked_at": when(record.revoked_at),
        "last_used_at": when(record.last_used_at),
        "rotated_from": record.rotated_from,
    }


def _print_issued(issued: IssuedKey) -> None:
    print(issued.key)
    details = _row(issued.record)
    print(
        f"key {details['prefix']} for tenant {details['tenant']} "
        f"(scopes {','.join(details['scopes'])}, models {details['models']}); "
        "it is shown only now: store it safely",
        file=sys.stderr,
    )


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="image-service-keys", description=__doc__.split("\n")[0])
    # Required: a default would quietly write keys to another deployment's database.
    top.add_argument(
        "--config",
        type=Path,
        required=True,
        help="the Serve config whose auth.database_url holds the keys, "
        "e.g. configs/production.yaml (configs/local.yaml on a laptop)",
    )
    top.add_argument("--app", help="application name in the Serve config (default: first)")
    commands = top.add_subparsers(dest="command", required=True)

    create = commands.add_parser("create", help="issue a key; prints it once")
    create.add_argument("--tenant", required=True)
    create.add_argument("--name", required=True, help="what the key is for, e.g. crm-prod")
    create.add_argument("--scopes", type=_scopes, required=True, help=",".join(SCOPES))
    create.add_argument("--models", type=_csv, help="comma list; default: every model")
    create.add_argument("--expires-in-days", type=float)

    listing = commands.add_parser("list", help="keys and their state; never secrets")
    listing.add_argument("--tenant")
    listing.add_argument("--json", action="store_true")

    revoke = commands.add_parser("revoke", help="stop a key at once")
    revoke.add_argument("prefix")

    rotate = commands.add_parser("rotate", help="a new key like this one; both stay live")
    rotate.add_argument("prefix")
    rotate.add_argument(
        "--old-expires-in-days", type=float, help="also let the old key expire after this"
    )
    return top


def _warn_unserved(models: list[str] | None, served: set[str]) -> None:
    """A key may name models this config does not serve (another deployment's, or one to
    come); say so, since with this config the key can never use them."""
    unserved = sorted(set(models or ()) - served)
    if unserved:
        print(
            f"warning: this config serves no model named {', '.join(unserved)} "
            f"(it serves {', '.join(sorted(served))}); the key is made as asked",
            file=sys.stderr,
        )


def run(args: argparse.Namespace, store: KeyStore, served: set[str] | None = None) -> int:
    if args.command == "create":
        if served is not None:
            _warn_unserved(args.models, served)
        issued = store.create_key(
            args.tenant, args.name, args.scopes, args.models, expiry_in(args.expires_in_days)
        )
        _print_issued(issued)
    elif args.command == "list":
        rows = [_row(record) for record in store.list_keys(args.tenant)]
        if args.json:
            print(json.dumps(rows, indent=2))
        for row in [] if args.json else rows:
            state = "revoked" if row["revoked_at"] else "live"
            print(
                f"{row['prefix']}  {row['tenant']:<16} {row['name']:<20} {state:<8} "
                f"scopes={','.join(row['scopes'])} models={row['models']} "
                f"expires={row['expires_at'] or '-'} last_used={row['last_used_at'] or '-'}"
            )
    elif args.command == "revoke":
        record = store.revoke(args.prefix)
        print(f"revoked {record.prefix} (tenant {record.tenant})")
    elif args.command == "rotate":
        _print_issued(store.rotate(args.prefix, expiry_in(args.old_expires_in_days)))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    config = app_config(args.config, args.app)
    try:
        hasher = KeyHasher(pepper_from_environment(config.auth.pepper_env))
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    store = KeyStore.open(environment.key_database_url(config.auth.database_url), hasher)
    try:
        return run(args, store, {model.name for model in config.models})
    except (KeyNotFound, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main())
