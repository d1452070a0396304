"""streams/metrics.py without a broker: what each recording call exports, bounded labels, and
that the dashboard and alert rules only name metrics a worker exports.

The end-to-end proof (real worker, real broker, real Prometheus) is tests/test_prometheus.py.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import faust
import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from agents.records import Article, Entity, Failure
from streams.metrics import (
    DUPLICATE_KINDS,
    KNOWN_FAILURES,
    BoundedLabel,
    Metrics,
    PartitionOffsets,
    install,
    parse_timestamp,
)

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "grafana" / "dashboards" / "newsflow.json"
RULES = ROOT / "deploy" / "prometheus" / "rules"
# Exported by Prometheus itself about each scrape, not by the worker.
PROMETHEUS_OWN = {"up", "scrape_duration_seconds"}


def samples(metrics: Metrics) -> dict[tuple[str, frozenset], float]:
    text = metrics.exposition().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, frozenset(labels.items())))


def article(**fields) -> Article:
    base = {"id": "a1", "url": "https://example.org/a", "text": "Some text.", "language": "en"}
    return Article(**{**base, **fields})


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry(), build={"version": "test"}, process_collectors=False)


def test_bounded_label_sets_exist_at_zero_before_any_page(metrics):
    # A panel over a counter no label set has touched returns no series at all.
    for kind in DUPLICATE_KINDS:
        assert value(metrics, "newsflow_duplicates_total", kind=kind) == 0
        assert value(metrics, "newsflow_dedup_state_entries", kind=kind) == 0
    for reason, stage in KNOWN_FAILURES:
        assert value(metrics, "newsflow_dead_letters_total", reason=reason, stage=stage) == 0
    assert value(metrics, "newsflow_pages_received_total") == 0
    assert value(metrics, "newsflow_build_info", version="test") == 1
    assert value(metrics, "newsflow_end_to_end_latency_seconds_count", clock="produced") == 0


def test_every_page_ends_as_exactly_one_outcome(metrics):
    metrics.page_received(5)
    metrics.record_outcome(article(entities=[Entity("Palmyra", "GPE", 3)]))
    metrics.record_outcome(article(duplicate_kind="near", duplicate_of="a0"))
    metrics.record_outcome(Failure("not_html", "envelope", "image/png"))
    metrics.record_failure("internal_error", "pipeline")
    got = samples(metrics)
    received = got[("newsflow_pages_received_total", frozenset())]
    out = got[("newsflow_articles_out_total", frozenset())]
    dups = sum(v for (n, _), v in got.items() if n == "newsflow_duplicates_total")
    dead = sum(v for (n, _), v in got.items() if n == "newsflow_dead_letters_total")
    in_flight = got[("newsflow_pages_in_flight", frozenset())]
    assert (received, out, dups, dead, in_flight) == (5, 1, 1, 2, 1)
    assert value(metrics, "newsflow_duplicates_total", kind="near") == 1
    assert value(metrics, "newsflow_dead_letters_total", reason="not_html", stage="envelope") == 1
    # A duplicate is not an article out: it adds nothing to the language mix.
    assert value(metrics, "newsflow_articles_by_language_total", language="en") == 1


def test_story_assignments_count_new_joined_and_undated_but_not_replays(metrics):
    from agents.stories import Assignment

    for outcome in ("new", "joined", "no_time"):
        assert value(metrics, "newsflow_story_assignments_total", outcome=outcome) == 0
    metrics.record_story(Assignment("s-a", True, 0.0, 1))
    metrics.record_story(Assignment("s-a", False, 0.4, 2))
    metrics.record_story(Assignment("s-a", False, 0.0, 0))  # a replayed article: counted before
    metrics.record_story(Failure("no_time", "stories"))
    metrics.set_stories_live(7)
    metrics.set_stories_held(3)
    assert value(metrics, "newsflow_story_assignments_total", outcome="new") == 1
    assert value(metrics, "newsflow_story_assignments_total", outcome="joined") == 1
    assert value(metrics, "newsflow_story_assignments_total", outcome="no_time") == 1
    assert value(metrics, "newsflow_stories_live") == 7
    assert value(metrics, "newsflow_stories_held") == 3


def test_entities_are_counted_per_distinct_entity_by_label(metrics):
    metrics.page_received(1)
    entities = [Entity("Palmyra", "GPE", 4), Entity("Syria", "GPE", 1), Entity("ISIS", "ORG", 2)]
    metrics.record_outcome(article(entities=entities))
    assert value(metrics, "newsflow_entities_total", label="GPE") == 2
    assert value(metrics, "newsflow_entities_total", label="ORG") == 1


def test_labels_stay_bounded_whatever_the_values(metrics):
    metrics.page_received(4)
    metrics.record_outcome(article(language="tlh", entities=[Entity("x", "SPACESHIP", 1)]))
    metrics.record_outcome(Failure("Traceback (most recent call last): ...", "no such stage!"))
    metrics.record_outcome(Failure("brand_new_reason", "extract"))
    metrics.record_outcome(article(duplicate_kind="https://evil.example/?q=1"))
    assert value(metrics, "newsflow_articles_by_language_total", language="other") == 1
    assert value(metrics, "newsflow_entities_total", label="other") == 1
    assert value(metrics, "newsflow_dead_letters_total", reason="other", stage="other") == 1
    # A new snake_case reason from a stage shows by name (up to a cap).
    assert value(metrics, "newsflow_dead_letters_total", reason="brand_new_reason", stage="extract")
    assert value(metrics, "newsflow_duplicates_total", kind="other") == 1


def test_bounded_label_caps_new_values():
    label = BoundedLabel({"known"}, cap=2)
    assert [label(v) for v in ("known", "a_one", "a_two", "a_three", "a_one", None)] == [
        "known", "a_one", "a_two", "other", "a_one", "other",
    ]  # fmt: skip


def test_end_to_end_latency_from_both_clocks(metrics):
    metrics.page_received(3)
    now = parse_timestamp("2024-05-01T12:00:00+00:00")
    metrics.record_outcome(
        article(fetched_at="2024-05-01T11:59:00Z"), produced_at=now - 2.0, now=now
    )
    metrics.record_outcome(article(fetched_at="2024-05-01T11:30:00"), now=now)  # naive = UTC
    metrics.record_outcome(article(fetched_at="yesterday-ish"), now=now)  # not a time: skipped
    assert value(metrics, "newsflow_end_to_end_latency_seconds_count", clock="fetched") == 2
    assert value(metrics, "newsflow_end_to_end_latency_seconds_sum", clock="fetched") == 60 + 1800
    assert value(metrics, "newsflow_end_to_end_latency_seconds_sum", clock="produced") == 2.0
    bucket = "newsflow_end_to_end_latency_seconds_bucket"
    assert value(metrics, bucket, clock="produced", le="2.5") == 1
    assert value(metrics, bucket, clock="produced", le="1.0") == 0


def test_a_fetch_time_in_the_future_counts_as_zero_not_negative(metrics):
    metrics.page_received(1)
    metrics.record_outcome(article(fetched_at="2030-01-01T00:00:00Z"), now=0.0 + 1.7e9)
    assert value(metrics, "newsflow_end_to_end_latency_seconds_sum", clock="fetched") == 0
    assert value(metrics, "newsflow_end_to_end_latency_seconds_count", clock="fetched") == 1


def test_stage_totals_become_per_page_observations(metrics):
    before = {"extract": (1.0, 10), "entities": (2.0, 10)}
    after = {"extract": (1.8, 26), "entities": (2.8, 26), "clean": (0.016, 16)}
    metrics.observe_stage_totals(before, after)
    assert value(metrics, "newsflow_stage_duration_seconds_count", stage="extract") == 16
    assert value(metrics, "newsflow_stage_duration_seconds_sum", stage="extract") == pytest.approx(
        0.8
    )
    # 16 pages at 50 ms each: all in the 0.05 bucket, none below.
    bucket = "newsflow_stage_duration_seconds_bucket"
    assert value(metrics, bucket, stage="entities", le="0.05") == 16
    assert value(metrics, bucket, stage="entities", le="0.025") == 0
    assert value(metrics, bucket, stage="clean", le="0.001") == 16


def test_lag_is_replaced_whole_and_never_negative(metrics):
    metrics.lag.update(
        [PartitionOffsets("raw-pages", 0, 120, 100), PartitionOffsets("raw-pages", 1, 7, 9)]
    )
    assert value(metrics, "newsflow_consumer_lag_records", topic="raw-pages", partition="0") == 20
    # A broker reporting a high watermark below the committed offset (Tansu 0.6 after batched
    # produce) must not show as negative lag.
    assert value(metrics, "newsflow_consumer_lag_records", topic="raw-pages", partition="1") == 0
    metrics.lag.update([PartitionOffsets("raw-pages", 1, 50, 9)])  # partition 0 was revoked
    assert value(metrics, "newsflow_consumer_lag_records", topic="raw-pages", partition="0") is None
    assert (
        value(metrics, "newsflow_consumer_highwater_offset", topic="raw-pages", partition="1") == 50
    )


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_worker_exposition_passes_promtool_lint():
    """Everything a worker serves, Faust's sensor metrics included, as `install` sets it up."""
    metrics = Metrics(CollectorRegistry())
    app = faust.App("lint-test", broker="kafka://127.0.0.1:1", autodiscover=False)
    install(app, metrics)
    # A second app in the same process (tests, tools) shares the metrics instead of clashing.
    install(faust.App("lint-test-2", broker="kafka://127.0.0.1:1", autodiscover=False), metrics)
    metrics.page_received(2)
    metrics.record_outcome(article(entities=[Entity("Palmyra", "GPE", 1)], fetched_at="2024-01-01"))
    metrics.record_outcome(Failure("too_large", "envelope"))
    metrics.lag.update([PartitionOffsets("raw-pages", 0, 3, 1)])
    text = metrics.exposition()
    assert b"faust_messages_received_total" in text
    assert b"_created" not in text  # install turns the per-series creation stamps off
    done = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True)
    assert done.returncode == 0, (done.stdout + done.stderr).decode()


def test_table_operations_are_counted_per_table_and_operation():
    """The monitor caches its counters' label children; the counts stay Faust's."""
    metrics = Metrics(CollectorRegistry())
    app = faust.App("table-ops-test", broker="kafka://127.0.0.1:1", autodiscover=False)
    install(app, metrics)
    table = app.Table("df", default=int)
    for _ in range(3):  # what Faust's table calls on a get and a set
        app.monitor.on_table_get(table, "w")
        app.monitor.on_table_set(table, "w", 1)
    app.monitor.on_table_del(table, "w")
    counted = {op: value(metrics, "faust_table_operations_total", table="table.df", operation=op)
               for op in ("keys_retrieved", "keys_updated", "keys_deleted")}  # fmt: skip
    assert counted == {"keys_retrieved": 3.0, "keys_updated": 3.0, "keys_deleted": 1.0}
    assert len(app.monitor._metrics.table_operations.children) == 3  # one lookup per label set


# -- the dashboard and the rules only use metrics a worker exports ----------------------------

# A metric name, not part of a recording rule's name (level:metric:operations).
METRIC_NAME = re.compile(r"(?<![\w:])((?:newsflow|faust|process|python)_[a-z0-9_]+)(?![\w:])")


def exported_names() -> set[str]:
    """Every sample name a worker's registry can export, including histogram suffixes."""
    metrics = Metrics(CollectorRegistry())
    metrics.lag.update([PartitionOffsets("t", 0, 1, 0)])
    metrics.page_received()
    metrics.record_outcome(article(language="en", entities=[Entity("x", "ORG", 1)]))
    return {s.name for f in metrics.registry.collect() for s in f.samples}


def dashboard_exprs() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in board["panels"] for t in p.get("targets", [])]


def rule_exprs() -> list[tuple[str, str]]:
    out = []
    for path in sorted(RULES.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            out += [(r.get("alert") or r["record"], r["expr"]) for r in group["rules"]]
    return out


def test_dashboard_json_is_what_the_generator_writes():
    spec = importlib.util.spec_from_file_location(
        "build_dashboard", DASHBOARD.parent.parent / "build_dashboard.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render() == DASHBOARD.read_text(), "run: python grafana/build_dashboard.py"


def test_dashboard_and_rules_name_only_exported_metrics():
    exported = exported_names() | PROMETHEUS_OWN
    recorded = {name for name, _ in rule_exprs() if ":" in name}
    for where, expr in dashboard_exprs() + rule_exprs():
        names = set(METRIC_NAME.findall(expr))
        names |= {n for n in ("up", "scrape_duration_seconds") if re.search(rf"\b{n}\{{", expr)}
        unknown = {n for n in names if n not in exported}
        assert names or any(r in expr for r in recorded), f"{where}: no metric in {expr!r}"
        assert not unknown, f"{where}: {sorted(unknown)} not exported by a worker"


def test_every_panel_explains_itself_and_panels_do_not_overlap():
    board = json.loads(DASHBOARD.read_text())
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert len(panel.get("description", "")) > 30, panel["title"]
            assert panel["targets"], panel["title"]
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        mine = {(pos["x"] + dx, pos["y"] + dy) for dx in range(pos["w"]) for dy in range(pos["h"])}
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
    variables = {v["name"] for v in board["templating"]["list"]}
    assert {"datasource", "job", "instance", "window"} <= variables


# Modules on the enrich path whose Failure values end as dead letters.
ENRICH_PATH = [
    "streams/envelope.py", "agents/extract.py", "agents/clean.py", "agents/language.py",
    "agents/pipeline.py", "agents/enrich_agent.py", "streams/topics.py",
]  # fmt: skip


def test_every_reason_code_on_the_enrich_path_is_pre_initialised():
    """A reason added to a stage must be added to KNOWN_FAILURES, or its panel series and the
    alert rules see nothing until the first such page."""
    found: set[tuple[str, str]] = set()
    for name in ENRICH_PATH:
        source = (ROOT / name).read_text()
        stage = re.search(r'^STAGE = "([a-z_]+)"', source, re.M)
        for reason, where in re.findall(r'(?:Failure|_fail)\(\s*"([a-z_]+)",?\s*([^,)]*)', source):
            literal = re.fullmatch(r'"([a-z_]+)"', where.strip())
            if literal:
                found.add((reason, literal.group(1)))
            elif stage and (where.strip() in ("STAGE", "") or name.endswith("envelope.py")):
                found.add((reason, stage.group(1)))
    assert len(found) >= 15, found  # the scan itself still finds the codes
    assert found <= set(KNOWN_FAILURES), sorted(found - set(KNOWN_FAILURES))
    # ... and no stale entry: only crash codes have a stage the scan cannot read (a variable).
    crashes = {("internal_error", s) for s in ("envelope", "extract", "clean", "language")}
    # agents/supervisor.py names the stage the child was in when it overran or died
    text_stages = ("extract", "clean", "language")
    crashes |= {(r, s) for r in ("timeout", "worker_crash") for s in text_stages}
    assert set(KNOWN_FAILURES) - found <= crashes, sorted(set(KNOWN_FAILURES) - found - crashes)
