"""The describer resource: which describer runs, with what model, prices, limits and budget.

Default: the live Anthropic describer only when ANTHROPIC_API_KEY is set (AION_DESCRIBER=recorded|anthropic
overrides), else the recorded one; the choice and its reason are logged and shown in metadata, e.g.
"describer: recorded (no ANTHROPIC_API_KEY)". The key itself is never a config field: the client takes it from
the settings and it goes nowhere else.

Every default (model, prices, limits) is the pure ``AnthropicConfig``'s, so the two cannot drift; the prices in
there come from ``client.Pricing``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import dagster as dg

from aion_assets.platform.resources import from_setting
from aion_assets.platform.settings import SETTING_BY_VARIABLE, AionSettings, get_settings
from aion_assets.vlm.describers import (
    AnthropicConfig,
    AnthropicDescriber,
    Describer,
    RecordedDescriber,
    VlmStore,
    choose_describer,
    describer_code_version,
)

_PURE = AnthropicConfig()


def _value_at_load(value: str) -> str:
    """A field's value while the definitions load, before Dagster resolves a ``dg.EnvVar``: the settings' value of
    that variable, which is what Dagster resolves it to at run time."""
    if not isinstance(value, dg.EnvVar):
        return value
    configured = getattr(get_settings(), SETTING_BY_VARIABLE[value.env_var_name].field)
    return "" if configured is None else str(configured)


class DescriberResource(dg.ConfigurableResource):
    """Config of the describer behind ``vlm_descriptions`` (and the size of ``description_sample``)."""

    kind: str = ""  # "recorded" | "anthropic" | "" = automatic (see module docstring)
    model: str = _PURE.model
    prompt_version: str = _PURE.prompt_version
    max_tokens: int = _PURE.max_tokens
    input_price_per_mtok: float = _PURE.input_price_per_mtok
    output_price_per_mtok: float = _PURE.output_price_per_mtok
    batch_discount: float = _PURE.batch_discount
    max_input_tokens: int = _PURE.max_input_tokens
    concurrency: int = _PURE.concurrency
    budget_usd: float = _PURE.budget_usd
    batch_threshold: int = _PURE.batch_threshold
    poll_interval_s: float = _PURE.poll_interval_s
    timeout_s: float = _PURE.timeout_s
    max_retries: int = _PURE.max_retries
    base_url: str = _PURE.base_url  # empty: ANTHROPIC_BASE_URL from the settings, else the SDK default
    sample_size: int = 1120
    seed: int = 0
    recorded_path: str = ""  # empty: AION_RECORDED_DESCRIPTIONS, else the shared recorded answers

    def decision(self) -> tuple[str, str]:
        return choose_describer(self.kind)

    def label(self) -> str:
        kind, why = self.decision()
        return f"{kind} ({why})"

    def anthropic_config(self) -> AnthropicConfig:
        # Every setting this resource exposes goes through by name; the rest keep the pure config's defaults.
        shared = {f.name for f in dataclasses.fields(AnthropicConfig)} & set(type(self).model_fields)
        return AnthropicConfig(**{name: getattr(self, name) for name in shared})

    def build(self, store: VlmStore | None = None, log: Any = None) -> Describer:
        kind, _ = self.decision()
        if kind == "recorded":
            return RecordedDescriber(self.recorded_path or None)
        return AnthropicDescriber(self.anthropic_config(), store=store, log=log)

    def code_version(self) -> str:
        # Called while the definitions load (the asset's code version), when recorded_path may be an EnvVar.
        return describer_code_version(self.kind, self.model, self.prompt_version,
                                      _value_at_load(self.recorded_path) or None)

    def sample_code_version(self) -> str:
        kind, _ = self.decision()
        return f"{kind}|n={self.sample_size}|seed={self.seed}" if kind != "recorded" else "recorded set"


def describer_resource(settings: AionSettings | None = None) -> DescriberResource:
    """The describer configured by the settings: each variable the user set shows in the UI as its EnvVar.

    ``kind`` stays "" (automatic): AION_DESCRIBER is applied by ``choose_describer`` from the settings, so the UI's
    reason reads "recorded (AION_DESCRIBER)" rather than a bare "configured"."""
    settings = settings or get_settings()
    return DescriberResource(
        base_url=from_setting(settings, "anthropic_base_url"),
        recorded_path=from_setting(settings, "recorded_descriptions"),
    )
