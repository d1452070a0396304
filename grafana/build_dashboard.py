"""Generates grafana/dashboards/newsflow.json, the dashboard Grafana's file provider loads.

    .venv/bin/python grafana/build_dashboard.py           # rewrite the JSON
    .venv/bin/python grafana/build_dashboard.py --check   # exit 1 if the JSON is out of date

Plain Python, no Grafana library: a panel is a title, a description (what it means, shown as
the panel's info tooltip and listed in the README) and its PromQL. Every metric named here
is one a worker exports (streams/metrics.py) or Prometheus' `up` / `scrape_duration_seconds`;
tests/test_prometheus.py runs every query against a real Prometheus scraping a real worker
and fails on any that returns no series.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards" / "newsflow.json"
UID = "newsflow"
DS = {"type": "prometheus", "uid": "${datasource}"}
# Label filter every newsflow query carries: the job and worker-instance variables.
SEL = 'job=~"$job",instance=~"$instance"'
W = "$window"  # the rate window variable


def target(expr: str, legend: str = "", ref: str = "A", **extra: Any) -> dict[str, Any]:
    return {"refId": ref, "datasource": DS, "expr": expr, "legendFormat": legend, **extra}


def targets(*items: tuple[str, str]) -> list[dict[str, Any]]:
    return [target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(items)]


class Layout:
    """Places panels left to right in rows of 24 grid units, numbering them."""

    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.x = self.y = 0
        self.row_height = 0

    def row(self, title: str) -> None:
        self._newline()
        self._add({"type": "row", "title": title, "collapsed": False, "panels": []}, 24, 1)
        self._newline()

    def panel(self, panel: dict[str, Any], w: int, h: int) -> None:
        if self.x + w > 24:
            self._newline()
        self._add(panel, w, h)

    def _add(self, panel: dict[str, Any], w: int, h: int) -> None:
        panel["id"] = len(self.panels) + 1
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.panels.append(panel)
        self.x += w
        self.row_height = max(self.row_height, h)

    def _newline(self) -> None:
        if self.x:
            self.y += self.row_height
        self.x, self.row_height = 0, 0


def stat(title: str, description: str, tgts: list, unit: str = "short", **opts: Any) -> dict:
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": tgts,
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "decimals": opts.get("decimals"),
                "color": {"mode": "thresholds"},
                "thresholds": opts.get(
                    "thresholds",
                    {"mode": "absolute", "steps": [{"color": "green", "value": None}]},
                ),
            },
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "justifyMode": "auto",
            "textMode": "auto",
            "orientation": "auto",
        },
    }


def timeseries(
    title: str,
    description: str,
    tgts: list,
    unit: str = "short",
    *,
    stack: str = "none",
    fill: int = 10,
    legend_calcs: tuple[str, ...] = ("mean", "max"),
) -> dict:
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": tgts,
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "min": 0,
                "color": {"mode": "palette-classic"},
                "custom": {
                    "drawStyle": "line",
                    "lineWidth": 1,
                    "fillOpacity": fill,
                    "showPoints": "never",
                    "spanNulls": False,
                    "stacking": {"mode": stack, "group": "A"},
                },
            },
            "overrides": [],
        },
        "options": {
            "legend": {
                "displayMode": "table",
                "placement": "right" if len(tgts) > 2 else "bottom",
                "calcs": list(legend_calcs),
                "showLegend": True,
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def bargauge(title: str, description: str, tgts: list, unit: str = "short") -> dict:
    return {
        "type": "bargauge",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": tgts,
        "fieldConfig": {
            "defaults": {"unit": unit, "min": 0, "color": {"mode": "continuous-BlPu"}},
            "overrides": [],
        },
        "options": {
            "displayMode": "gradient",
            "orientation": "horizontal",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "showUnfilled": True,
            "valueMode": "color",
        },
    }


def table(title: str, description: str, tgts: list, hide: list[str]) -> dict:
    return {
        "type": "table",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": tgts,
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {"showHeader": True, "cellHeight": "sm"},
        "transformations": [
            {"id": "organize", "options": {"excludeByName": dict.fromkeys(hide, True)}}
        ],
    }


def quantile(q: float, metric: str, by: str) -> str:
    return f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket{{{SEL}}}[{W}])))"


def rate(metric: str, by: str = "") -> str:
    group = f" by ({by})" if by else ""
    return f"sum{group} (rate({metric}{{{SEL}}}[{W}]))"


def panels() -> list[dict[str, Any]]:
    lay = Layout()
    pages_in = rate("newsflow_pages_received_total")

    lay.row("Overview")
    lay.panel(
        stat(
            "Workers up",
            "Worker processes Prometheus scraped successfully on its last attempt, out of all "
            "worker targets it knows. Fewer up than targets: a worker is down or its /metrics "
            "does not answer (alert NewsflowWorkerDown).",
            targets((f"sum(up{{{SEL}}})", "up"), (f"count(up{{{SEL}}})", "targets")),
            decimals=0,
        ),
        4,
        4,
    )
    lay.panel(
        stat(
            "Pages in",
            "Raw pages taken off the input topic per second, all selected workers together.",
            targets((pages_in, "pages/s")),
            "reqps",
        ),
        4,
        4,
    )
    lay.panel(
        stat(
            "Articles out",
            "Unique articles written to the articles topic per second.",
            targets((rate("newsflow_articles_out_total"), "articles/s")),
            "reqps",
        ),
        4,
        4,
    )
    lay.panel(
        stat(
            "Dead-letter share",
            "Share of input pages that ended on the dead-letter topic over the rate window. "
            "Some share is normal (crawled pages that are not articles); alert "
            "NewsflowDeadLetterRateHigh fires above 50%.",
            targets((f"{rate('newsflow_dead_letters_total')} / {pages_in}", "dead letters")),
            "percentunit",
            thresholds={
                "mode": "absolute",
                "steps": [
                    {"color": "green", "value": None},
                    {"color": "orange", "value": 0.25},
                    {"color": "red", "value": 0.5},
                ],
            },
        ),
        4,
        4,
    )
    lay.panel(
        stat(
            "Pages in flight",
            "Pages the workers have taken off the input topic whose outcome is not written yet: "
            "at most a few batches per worker; more means outputs are slow to send.",
            targets((f"sum(newsflow_pages_in_flight{{{SEL}}})", "in flight")),
            decimals=0,
        ),
        4,
        4,
    )
    lay.panel(
        stat(
            "Consumer lag",
            "Records on the input partitions not yet committed by the consumer group, summed "
            "over partitions: the backlog. Divide by Pages in for the time to drain it.",
            targets(
                (
                    f"sum(max by (topic, partition) (newsflow_consumer_lag_records{{{SEL}}}))",
                    "records",
                )
            ),
            decimals=0,
        ),
        4,
        4,
    )

    lay.row("Throughput")
    lay.panel(
        timeseries(
            "Pages in / out per second",
            "In: raw pages taken off the input topic. Out, by outcome: unique articles, "
            "duplicates and dead letters. Every page ends as exactly one of the three, so in "
            "the long run in = articles + duplicates + dead letters; a gap that stays open is "
            "pages stuck in flight.",
            targets(
                (pages_in, "pages in"),
                (rate("newsflow_articles_out_total"), "articles out"),
                (rate("newsflow_duplicates_total"), "duplicates"),
                (rate("newsflow_dead_letters_total"), "dead letters"),
            ),
            "reqps",
        ),
        24,
        8,
    )

    lay.row("Quality")
    lay.panel(
        timeseries(
            "Duplicate rate (share of input, by kind)",
            "Share of input pages found to repeat an earlier article: url = same canonical URL, "
            "exact = same normalised text, near = MinHash similarity above the threshold. A jump "
            "is a crawler re-fetching or a feed replayed (alert NewsflowDuplicateRateSpike).",
            targets(
                (
                    f"{rate('newsflow_duplicates_total', 'kind')} / ignoring (kind) group_left "
                    f"{pages_in}",
                    "{{kind}}",
                )
            ),
            "percentunit",
            stack="normal",
        ),
        12,
        8,
    )
    lay.panel(
        timeseries(
            "Dead letters per second, by reason",
            "Pages that produced no article, by reason code and the stage that gave it. "
            "envelope reasons are bad input records; internal_error is a crashed stage, a bug "
            "(alert NewsflowStageCrashing). The README lists every reason code.",
            targets(
                (rate("newsflow_dead_letters_total", "reason, stage"), "{{reason}} ({{stage}})")
            ),
            "reqps",
            stack="normal",
        ),
        12,
        8,
    )

    lay.row("Content")
    lay.panel(
        timeseries(
            "Language mix over time",
            "Share of articles out by detected language (ISO 639-1; und = too short or too "
            "mixed to tell). A shift means a source changed or a new one started.",
            targets((rate("newsflow_articles_by_language_total", "language"), "{{language}}")),
            "reqps",
            stack="percent",
            fill=60,
        ),
        12,
        8,
    )
    lay.panel(
        bargauge(
            "Top entity labels",
            "Entities tagged in the articles out over the dashboard's time range, by NER label "
            "(PERSON, ORG, GPE, ...), ten largest. Entities are tagged for English articles.",
            [
                target(
                    "topk(10, sum by (label) "
                    f"(increase(newsflow_entities_total{{{SEL}}}[$__range])))",
                    "{{label}}",
                    instant=True,
                    range=False,
                )
            ],
        ),
        12,
        8,
    )

    lay.row("Latency")
    lay.panel(
        timeseries(
            "Stage latency p50 / p95 / p99",
            "Time one page spends in each stage (extract, clean, language, entities). Entities "
            "are tagged a batch at a time, so their per-page time is the batch mean. The slowest "
            "stage bounds a worker's throughput.",
            targets(
                *(
                    (quantile(q, "newsflow_stage_duration_seconds", "stage"), f"{{{{stage}}}} p{p}")
                    for q, p in ((0.5, 50), (0.95, 95), (0.99, 99))
                )
            ),
            "s",
            fill=0,
            legend_calcs=("mean", "max"),
        ),
        12,
        8,
    )
    lay.panel(
        timeseries(
            "End-to-end latency p99",
            "99th percentile time from a page to its article on the articles topic. "
            "produced: from the raw page's write to the input topic (queueing + processing, "
            "what newsflow controls); fetched: from the crawler's fetched_at (adds the "
            "crawler's own delay).",
            targets((quantile(0.99, "newsflow_end_to_end_latency_seconds", "clock"), "{{clock}}")),
            "s",
            fill=0,
        ),
        12,
        8,
    )

    lay.row("Stories")
    stories = "newsflow_story_assignments_total"
    lay.panel(
        timeseries(
            "New stories per second",
            "Articles that opened a story (no live story close enough), against all articles "
            "given a story. A news day opens new stories steadily; a flat zero with articles "
            "flowing means every article joins one (threshold too low).",
            targets(
                (f'sum (rate({stories}{{{SEL},outcome="new"}}[{W}]))', "new stories"),
                (f'sum (rate({stories}{{{SEL},outcome=~"new|joined"}}[{W}]))', "articles"),
            ),
            "reqps",
        ),
        10,
        8,
    )
    lay.panel(
        timeseries(
            "Articles per story",
            "Articles given a story per story opened, over the window: how many reports a "
            "story gathers. Near 1: stories are not joining (threshold too high or a broken "
            "entity stage); climbing without a big event: unrelated stories merging.",
            targets(
                (
                    f'sum (rate({stories}{{{SEL},outcome=~"new|joined"}}[{W}])) / '
                    f'sum (rate({stories}{{{SEL},outcome="new"}}[{W}]))',
                    "articles per story",
                )
            ),
            "short",
        ),
        7,
        8,
    )
    lay.panel(
        timeseries(
            "Live stories and held articles",
            "Stories still joinable (inside NEWSFLOW_STORY_WINDOW_HOURS), and articles held "
            "up to NEWSFLOW_STORY_HOLD seconds so they are assigned in date order.",
            targets(
                (f"sum (newsflow_stories_live{{{SEL}}})", "live stories"),
                (f"sum (newsflow_stories_held{{{SEL}}})", "held articles"),
            ),
            "short",
        ),
        7,
        8,
    )

    lay.row("Kafka and state")
    lay.panel(
        timeseries(
            "Consumer lag by partition",
            "Records each input partition holds beyond the group's committed offset. Growing on "
            "every partition: add workers (up to the partition count). Growing on one: a slow "
            "worker or a hot key (alert NewsflowConsumerLagGrowing).",
            targets(
                (
                    f"max by (topic, partition) (newsflow_consumer_lag_records{{{SEL}}})",
                    "{{topic}}/{{partition}}",
                )
            ),
            "short",
        ),
        12,
        8,
    )
    lay.panel(
        timeseries(
            "Dedup state size",
            "Entries each deduplication index holds (url, exact, near), summed over workers: "
            "the state that grows with the articles kept for comparison.",
            targets((f"sum by (kind) (newsflow_dedup_state_entries{{{SEL}}})", "{{kind}}")),
            "short",
        ),
        6,
        8,
    )
    lay.panel(
        timeseries(
            "Pages in flight per worker",
            "Pages each worker has received whose outcome is not yet written.",
            targets((f"sum by (instance) (newsflow_pages_in_flight{{{SEL}}})", "{{instance}}")),
            "short",
        ),
        6,
        8,
    )

    lay.row("Workers")
    lay.panel(
        timeseries(
            "Scrape status per worker",
            "1 while Prometheus scrapes the worker, 0 when the scrape fails.",
            targets((f"up{{{SEL}}}", "{{instance}}")),
            "short",
            fill=0,
            legend_calcs=("min",),
        ),
        8,
        7,
    )
    lay.panel(
        timeseries(
            "CPU per worker",
            "CPU seconds per second each worker process uses; 1.0 is one core busy. A worker "
            "near 1.0 is CPU-bound: scale out, not up.",
            targets((f"rate(process_cpu_seconds_total{{{SEL}}}[{W}])", "{{instance}}")),
            "percentunit",
            fill=0,
        ),
        8,
        7,
    )
    lay.panel(
        timeseries(
            "Memory per worker",
            "Resident memory of each worker process (spaCy model, batches in flight, state).",
            targets((f"process_resident_memory_bytes{{{SEL}}}", "{{instance}}")),
            "bytes",
            fill=0,
        ),
        8,
        7,
    )
    lay.panel(
        timeseries(
            "/metrics scrape duration",
            "How long each worker took to answer Prometheus' scrape. The web server shares the "
            "worker's event loop, so a long scrape means the loop is blocked.",
            targets((f"scrape_duration_seconds{{{SEL}}}", "{{instance}}")),
            "s",
            fill=0,
        ),
        12,
        7,
    )
    lay.panel(
        table(
            "Worker versions",
            "newsflow, Faust and Python version of each worker, from newsflow_build_info.",
            [
                target(
                    f"newsflow_build_info{{{SEL}}}", "", format="table", instant=True, range=False
                )
            ],
            hide=["Time", "Value", "__name__"],
        ),
        12,
        7,
    )
    return lay.panels


def templating() -> dict[str, Any]:
    def query_var(name: str, label: str, query: str, **extra: Any) -> dict[str, Any]:
        return {
            "type": "query",
            "name": name,
            "label": label,
            "datasource": DS,
            "definition": query,
            "query": query,  # the plain-string form every Grafana version reads
            "refresh": 2,  # on time-range change: workers come and go
            "sort": 1,
            "regex": "",
            "hide": 0,
            "options": [],
            **extra,
        }

    windows = ["1m", "5m", "15m", "30m", "1h"]
    return {
        "list": [
            {
                "type": "datasource",
                "name": "datasource",
                "label": "Data source",
                "query": "prometheus",
                "current": {},
                "hide": 0,
                "options": [],
                "refresh": 1,
                "regex": "",
            },
            query_var(
                "job",
                "Job",
                "label_values(newsflow_build_info, job)",
                multi=False,
                includeAll=False,
                current={},
            ),
            query_var(
                "instance",
                "Worker",
                'label_values(newsflow_build_info{job=~"$job"}, instance)',
                multi=True,
                includeAll=True,
                allValue=".+",
                current={"selected": True, "text": ["All"], "value": ["$__all"]},
            ),
            {
                "type": "interval",
                "name": "window",
                "label": "Rate window",
                "description": "Window of every rate and quantile: short is responsive, long "
                "is smooth. Keep it at least 4 scrape intervals.",
                "query": ",".join(windows),
                "current": {"selected": True, "text": "5m", "value": "5m"},
                "options": [{"selected": w == "5m", "text": w, "value": w} for w in windows],
                "auto": False,
                "refresh": 2,
                "hide": 0,
            },
        ]
    }


def dashboard() -> dict[str, Any]:
    return {
        "uid": UID,
        "title": "newsflow",
        "description": "newsflow workers: throughput, duplicates, dead letters, languages, "
        "entities, stage and end-to-end latency, consumer lag. Source: "
        "grafana/build_dashboard.py.",
        "tags": ["newsflow", "kafka", "faust"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {"refresh_intervals": ["10s", "30s", "1m", "5m", "15m"]},
        "refresh": "30s",
        "templating": templating(),
        "annotations": {"list": []},
        "links": [],
        "panels": panels(),
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.is_file() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is out of date: run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
