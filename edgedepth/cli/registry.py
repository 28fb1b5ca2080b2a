"""`edgedepth keys`, `edgedepth publish`, `edgedepth gate`: sign, version and promote models."""

from __future__ import annotations

from typing import Optional, Tuple

import click

from edgedepth.cli.options import InputPath, OutputPath
from edgedepth.errors import ConfigError


@click.group("keys")
def keys() -> None:
    """Manage the Ed25519 key pair that signs published bundles."""


@keys.command("gen")
@click.option("--out", "out_dir", required=True, type=OutputPath(file_okay=False),
              help="Directory to write signing.key (private, mode 0600) and signing.pub (copy to devices).")
@click.option("--force", is_flag=True,
              help="Replace an existing key pair (devices must then get the new signing.pub).")
def keys_gen(out_dir: str, force: bool) -> None:
    """Generate a new signing key pair."""
    from edgedepth.registry.keys import generate_keypair, key_id, load_public_key

    key_path, pub_path = generate_keypair(out_dir, force=force)
    click.echo(f"private key: {key_path} (mode 0600; keep it off devices)")
    click.echo(f"public key:  {pub_path} (key id {key_id(load_public_key(pub_path))}; install on devices)")


@click.command("publish")
@click.argument("bundle", required=False, type=click.Path(exists=True, file_okay=False))
@click.option("--registry", required=True,
              help="Registry: a directory, file://PATH or s3://BUCKET/PREFIX (HTTP ones are read-only).")
@click.option("--key", "key_path", type=InputPath(dir_okay=False),
              help="Private signing key (signing.key from `edgedepth keys gen`); needed for every change, "
                   "since each one signs a new registry state.")
@click.option("--version", "version", default=None,
              help="Version number (dotted integers); default: one more than the newest published.")
@click.option("--promote", is_flag=True, help="Promote the new version at once (devices will install it).")
@click.option("--promote-only", "promote_only", default=None, metavar="V",
              help="Promote the already published version V instead of publishing a bundle.")
@click.option("--demote", "demote", default=None, metavar="V",
              help="Withdraw the promotion of version V (devices stop moving to it).")
@click.option("--resign", is_flag=True,
              help="Only sign the current registry state again with a fresh expiry (run it from a timer "
                   "well within --expires, or devices stop updating when the state expires).")
@click.option("--rebuild", is_flag=True,
              help="With --resign: rebuild a damaged state.json from index.json (each version's signature is "
                   "checked; promotions are taken from the index, so check them).")
@click.option("--status", is_flag=True,
              help="Print the registry's signed state (sequence, expiry, promoted versions) and exit; "
                   "needs --public-key or --key.")
@click.option("--expires", "expires", default="7d", show_default=True,
              help="How long devices accept the newly signed state: seconds or a number with s/m/h/d.")
@click.option("--previous-key", "previous_key", default=None, type=click.Path(dir_okay=False),
              help="After a key rotation: the old signing.pub, to verify the state signed with the old key.")
@click.option("--public-key", "public_key", default=None, type=click.Path(dir_okay=False),
              help="With --status: the signing.pub to verify the state with.")
@click.option("--endpoint-url", default=None, help="S3-compatible endpoint URL (MinIO, moto, ...).")
@click.option("--notes", default="", help="Free-text release notes stored with the version.")
def publish(bundle: Optional[str], registry: str, key_path: Optional[str], version: Optional[str],
            promote: bool, promote_only: Optional[str], demote: Optional[str], resign: bool, rebuild: bool,
            status: bool,
            expires: str, previous_key: Optional[str], public_key: Optional[str], endpoint_url: Optional[str],
            notes: str) -> None:
    """Publish BUNDLE as a new signed, immutable version of a model registry.

    Every change signs a new registry state (versions, their manifest hashes, what is promoted, a
    sequence number, an expiry); devices install only what a valid, unexpired, not-older state says.
    Engines are not published (each device builds its own). With --promote-only V or --demote V, only
    the promotion of an existing version changes; --resign only refreshes the expiry.
    """
    from edgedepth.durations import parse_duration
    from edgedepth.registry.publish import publish_bundle, read_state, resign_state, set_promoted

    if status:
        _print_status(registry, public_key or key_path, endpoint_url)
        return
    expires_s = parse_duration(expires)
    if rebuild and not resign:
        raise ConfigError("--rebuild goes with --resign")
    ops = [o for o in (promote_only, demote, True if resign else None) if o is not None]
    if ops:
        if bundle is not None or len(ops) > 1 or promote or version:
            raise ConfigError("--promote-only/--demote/--resign take no BUNDLE and no --version/--promote; "
                              "use one of them alone")
    elif bundle is None:
        raise ConfigError("give a BUNDLE directory to publish (or --promote-only V / --demote V / --resign)")
    if key_path is None:
        raise ConfigError("--key is required: every change signs a new registry state; pass the "
                          "signing.key from `edgedepth keys gen`")
    from edgedepth.registry.keys import load_private_key

    key = load_private_key(key_path)
    common = dict(endpoint_url=endpoint_url, expires_s=expires_s, previous_key=previous_key)
    if resign:
        state = resign_state(registry, key, rebuild=rebuild, **common)
        click.echo(f"re-signed {registry}: sequence {state.sequence}, expires {state.expires}, "
                   f"promoted {state.latest_promoted}")
        return
    if ops:
        target = promote_only if promote_only is not None else demote
        index = set_promoted(registry, target, promoted=promote_only is not None, private_key=key,
                             **common)
        click.echo(f"version {target} {'promoted' if promote_only else 'withdrawn'}; "
                   f"latest promoted: {index['latest_promoted']}")
        return
    entry = publish_bundle(bundle, registry, key, version=version, promote=promote, notes=notes,
                           **common)
    state = read_state(registry, key, endpoint_url=endpoint_url)
    click.echo(f"published {bundle} as version {entry['version']} to {registry} "
               f"({entry['files']} files, {entry['size_bytes']} bytes, manifest sha256 "
               f"{entry['manifest_sha256'][:16]}...){' - promoted' if entry['promoted'] else ''}; "
               f"state sequence {state.sequence}, expires {state.expires}")


def _print_status(registry: str, key: Optional[str], endpoint_url: Optional[str]) -> None:
    from edgedepth.registry.keys import load_private_key, load_public_key
    from edgedepth.registry.publish import read_state

    if key is None:
        raise ConfigError("--status needs --public-key (signing.pub) or --key to verify the state with")
    try:
        verify_with = load_public_key(key)
    except ConfigError:
        verify_with = load_private_key(key).public_key()
    state = read_state(registry, verify_with, endpoint_url=endpoint_url)
    if state is None:
        raise ConfigError(f"{registry} has no signed state.json yet; publish or --resign with --key")
    click.echo(f"registry {registry}: sequence {state.sequence}, issued {state.issued_at}, "
               f"expires {state.expires}, key {state.key_id}")
    for rec in state.versions:
        click.echo(f"  version {rec.version}{'  promoted' if rec.promoted else ''}  "
                   f"manifest sha256 {rec.manifest_sha256[:16]}...")


@click.command("gate")
@click.argument("candidate", type=click.Path(exists=True, dir_okay=False))
@click.option("--baseline", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The model the fleet runs now (.pt checkpoint or .onnx).")
@click.option("--regression-set", required=True, type=click.Path(exists=True, file_okay=False),
              help="Dataset folder the candidate must not get worse on.")
@click.option("--target-set", "target_sets", required=True, multiple=True,
              type=click.Path(exists=True, file_okay=False),
              help="Dataset folder the candidate must improve on; repeat it to score several folders as one "
                   "set (e.g. the val splits of every round so far).")
@click.option("--tolerance", default=0.02, show_default=True, type=float,
              help="Largest allowed relative worsening of AbsRel and d1 (0.02 = 2%).")
@click.option("--min-gain", default=0.0, show_default=True, type=float,
              help="Relative AbsRel improvement the target set must exceed (0.05 = 5%).")
@click.option("--protect-set", "protect_sets", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Dataset folder checked on its own that must not get worse beyond --protect-tolerance "
                   "(repeatable; e.g. the val split of every earlier round).")
@click.option("--protect-tolerance", default=0.10, show_default=True, type=float,
              help="Largest allowed relative worsening on each protected set (they are small, so looser).")
@click.option("--limit", default=None, type=int, help="Score at most this many frames of each set.")
@click.option("--json", "json_out", default=None, type=OutputPath(dir_okay=False),
              help="Also write the full result (metrics, per-domain figures, checks) as JSON here.")
def gate(candidate: str, baseline: str, regression_set: str, target_sets: Tuple[str, ...], tolerance: float,
         min_gain: float, protect_sets: Tuple[str, ...], protect_tolerance: float, limit: Optional[int],
         json_out: Optional[str]) -> None:
    """Decide whether CANDIDATE may replace the baseline; exits non-zero when refused."""
    from edgedepth.gate import default_evaluator, enforce, write_result
    from edgedepth.gate import gate as run_gate

    result = run_gate(candidate, baseline, regression_set, list(target_sets), tolerance=tolerance,
                      min_gain=min_gain, evaluator=default_evaluator(limit=limit),
                      protect_sets=list(protect_sets), protect_tolerance=protect_tolerance)
    click.echo(result.table())
    if json_out:
        write_result(result, json_out)
        click.echo(f"wrote {json_out}")
    enforce(result)

