"""`aion stellar ...`: ask the stellar emulator from the command line."""

from __future__ import annotations

import json

import click


@click.group()
def stellar() -> None:
    """The stellar label emulator: posteriors for any label from any measurements."""


@stellar.command()
@click.option("--given", default="", show_default=True,
              help='Comma-separated name=value in physical units, e.g. "teff=4900,m_h=-0.2"; empty: the prior.')
@click.option("--target", required=True, help="The label to infer, e.g. logg.")
@click.option("--samples", "n_samples", default=2000, show_default=True)
@click.option("--model-version", type=int, default=None, help="Default: the newest trained version.")
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def predict(given: str, target: str, n_samples: int, model_version: int | None, seed: int, as_json: bool) -> None:
    """The posterior of TARGET given some of a star's measurements: its summary and a small histogram."""
    from aion_assets.platform.warehouse import stack_warehouse
    from aion_assets.stellar.artifacts import load_from_lake, resolve_version
    from aion_assets.stellar.predict import parse_given, posterior_samples, text_histogram
    from aion_assets.stellar.scoring import summarise

    values = parse_given(given)
    lake = stack_warehouse().lake
    version = resolve_version(lake, model_version)
    model, standardisation = load_from_lake(lake, version)
    samples = posterior_samples(model, standardisation, values, target, n_samples, seed)
    summary = {name: float(value[0]) for name, value in summarise(samples[None, :]).items()}
    if as_json:
        click.echo(json.dumps({"model_version": version, "target": target.strip().lower(), "given": values,
                               "samples": n_samples, **summary}))
        return
    shown = ", ".join(f"{k}={v:g}" for k, v in values.items()) or "nothing (the prior)"
    click.echo(f"{target} given {shown}  (stellar emulator v{version}, {n_samples} samples)")
    click.echo(f"  median {summary['median']:.4g}   68%: [{summary['p16']:.4g}, {summary['p84']:.4g}]   "
               f"95%: [{summary['p2_5']:.4g}, {summary['p97_5']:.4g}]")
    for line in text_histogram(samples):
        click.echo("  " + line)
