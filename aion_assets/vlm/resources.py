"""The describer resource: which describer runs, with what model, prices, limits and budget.

Default: the live Anthropic describer only when ANTHROPIC_API_KEY is set (AION_DESCRIBER=recorded|anthropic
overrides), else the recorded one; the choice and its reason are logged and shown in metadata, e.g.
"describer: recorded (no ANTHROPIC_API_KEY)". The key itself is never a config field: it is read from the
environment by the client and goes nowhere else.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import dagster as dg

from aion_assets.vlm.describers import (
    DEFAULT_MODEL,
    AnthropicConfig,
    AnthropicDescriber,
    Describer,
    RecordedDescriber,
    VlmStore,
    choose_describer,
    describer_code_version,
)
from aion_assets.vlm.prompts import DESCRIBE_PROMPT_VERSION


class DescriberResource(dg.ConfigurableResource):
    """Config of the describer behind ``vlm_descriptions`` (and the size of ``description_sample``)."""

    kind: str = ""  # "recorded" | "anthropic" | "" = automatic (see module docstring)
    model: str = DEFAULT_MODEL
    prompt_version: str = DESCRIBE_PROMPT_VERSION
    max_tokens: int = 600
    input_price_per_mtok: float = 3.0
    output_price_per_mtok: float = 15.0
    batch_discount: float = 0.5
    max_input_tokens: int = 1000
    concurrency: int = 8
    budget_usd: float = 10.0
    batch_threshold: int = 500
    poll_interval_s: float = 30.0
    timeout_s: float = 120.0
    max_retries: int = 4
    base_url: str = ""  # empty: the SDK default (or ANTHROPIC_BASE_URL)
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
        return describer_code_version(self.kind, self.model, self.prompt_version, self.recorded_path or None)

    def sample_code_version(self) -> str:
        kind, _ = self.decision()
        return f"{kind}|n={self.sample_size}|seed={self.seed}" if kind != "recorded" else "recorded set"
