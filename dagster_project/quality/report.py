"""The analyst's data-quality report: one self-contained HTML page per run (plots inline).

Pure functions: `collect_report_data` reads the run's tables through DuckDB and GX's stored
validation results; `render_report` turns that into HTML.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path

import duckdb
import matplotlib
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from dagster_project.contracts import EVENT_COLUMNS
from dagster_project.detection.bots import BOT_THRESHOLD
from dagster_project.plots import figure_html
from dagster_project.pseudonyms import pseudonymise
from dagster_project.sources.raw_table import table_relation
from dagster_project.sql import connect, parquet_relation, query_pandas, sql_identifier


@dataclass
class ReportData:
    """Everything the report shows, as frames."""

    run_id: str
    accounting: pd.DataFrame  # per table and source file: read, clean, quarantined
    by_reason: pd.DataFrame  # table, reason, rows, share of rows read
    by_day: pd.DataFrame  # event day (from the file path or time): clean and quarantined
    null_rates: pd.DataFrame  # column, null share in the raw events
    rule_hits: pd.DataFrame  # rule, rows breaking it (overlapping)
    checks: pd.DataFrame  # suite, expectation, column, status, failing since, runs
    drift_days: pd.DataFrame  # day-over-day drift figures
    drift_checks: pd.DataFrame  # the reviewed drift checks and their verdicts
    bots: pd.DataFrame  # users, flagged users, events excluded
    bot_score_bins: pd.DataFrame  # score bin (lower edge), users
    flagged_users: pd.DataFrame  # the highest-scoring flagged users with their reasons
    flagged_by_pattern: pd.DataFrame  # pattern, users, events
    confusion: pd.DataFrame  # where labels exist: label (kind) x flagged / not flagged
    item_outlier_counts: pd.DataFrame  # items flagged by each outlier test
    top_item_outliers: pd.DataFrame  # the busiest outlier items with their reasons
    bot_groups: pd.DataFrame  # lockstep groups: members, items, days, windows, reason


def check_history(validations_dir: Path) -> pd.DataFrame:
    """Per expectation, from GX's stored results: latest status and since when it has failed."""
    rows = []
    for path in validations_dir.rglob("*.json"):
        result = json.loads(path.read_text())
        run_time = pd.Timestamp(result["meta"]["run_id"]["run_time"])
        for r in result["results"]:
            cfg = r["expectation_config"]
            kwargs = cfg.get("kwargs", {})
            rows.append(
                {
                    "suite": result["suite_name"],
                    "expectation": cfg["type"],
                    "column": kwargs.get("column") or ",".join(kwargs.get("column_list", [])),
                    "severity": (cfg.get("meta") or {}).get("severity", "error"),
                    "run_time": run_time,
                    "success": bool(r["success"]),
                    "unexpected_count": (r.get("result") or {}).get("unexpected_count"),
                }
            )
    if not rows:
        return pd.DataFrame(
            columns=["suite", "expectation", "column", "status", "failing_since", "runs"]
        )
    frame = pd.DataFrame(rows).sort_values("run_time")
    out = []
    for key, runs in frame.groupby(["suite", "expectation", "column", "severity"], sort=True):
        latest = runs.iloc[-1]
        since = None
        if not latest["success"]:
            passed = runs[runs["success"]]
            failing = runs[runs["run_time"] > passed["run_time"].max()] if len(passed) else runs
            since = failing["run_time"].min()
        out.append(
            {
                "suite": key[0],
                "expectation": key[1],
                "column": key[2],
                "severity": key[3],
                "status": "passed" if latest["success"] else "FAILED",
                "failing_rows": latest["unexpected_count"],
                "failing_since": since,
                "runs": len(runs),
                "first_run": runs["run_time"].iloc[0],
                "last_run": latest["run_time"],
            }
        )
    return pd.DataFrame(out).sort_values(["status", "suite"], ascending=[True, True])


def collect_report_data(
    tables: dict[str, Path],
    accounting: pd.DataFrame,
    rule_hits: dict[str, dict[str, int]],
    validations_dir: Path,
    drift_days: pd.DataFrame,
    drift_checks: pd.DataFrame,
    run_id: str,
    traffic_labels: Path | None = None,
) -> ReportData:
    """Read what the report needs. `tables` maps raw_events, quarantine, events_clean,
    user_traffic_scores, bot_groups, behaviour_exclusions and item_outliers to their Parquet file (raw:
    its folder); `accounting` is the per-table, per-file row accounting; `traffic_labels`
    (user_id, traffic_class, kind), where labels exist, gives the confusion matrix."""
    with connect() as con:
        con.register("accounting", accounting)
        scores = parquet_relation(tables["user_traffic_scores"])
        outliers = parquet_relation(tables["item_outliers"])
        return ReportData(
            run_id=run_id,
            accounting=accounting.drop(columns="balanced"),
            by_reason=_quarantine_by_reason(con, _relation(tables, "quarantine"), accounting),
            by_day=_rows_by_day(con),
            null_rates=_null_rates(con, _relation(tables, "raw_events")),
            rule_hits=_rule_hits_frame(rule_hits),
            checks=check_history(validations_dir),
            drift_days=drift_days,
            drift_checks=drift_checks,
            bots=_bot_summary(con, tables),
            bot_score_bins=_bot_score_bins(con, scores),
            flagged_users=_top_flagged_users(con, scores),
            flagged_by_pattern=_flagged_by_pattern(con, scores),
            confusion=_bot_confusion(con, scores, traffic_labels),
            item_outlier_counts=_item_outlier_counts(con, outliers),
            top_item_outliers=_top_item_outliers(con, outliers),
            bot_groups=_bot_groups(con, tables),
        )


def _relation(tables: dict[str, Path], name: str) -> str:
    """The SQL relation of table `name` (`table_relation`)."""
    return table_relation(tables[name])


def _quarantine_by_reason(
    con: duckdb.DuckDBPyConnection, quarantine: str, accounting: pd.DataFrame
) -> pd.DataFrame:
    """Quarantined rows per table, reason and source, and their share of the rows read."""
    read = accounting.groupby("table")["rows_read"].sum()
    by_reason = query_pandas(
        con,
        f'SELECT "table", reason, source, count(*) AS rows FROM {quarantine} GROUP BY ALL ORDER BY rows DESC',
    )
    by_reason["share_of_rows_read_%"] = (
        100 * by_reason["rows"] / by_reason["table"].map(read).astype(float)
    ).round(4)
    return by_reason


def _rows_by_day(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Clean and quarantined behaviour events per day of the file path (`accounting`)."""
    return query_pandas(
        con,
        """SELECT coalesce(regexp_extract(source_file, 'date=([0-9-]+)', 1), '') AS day,
            sum(rows_clean) AS clean, sum(rows_quarantined) AS quarantined
        FROM (SELECT * FROM accounting WHERE "table" = 'behaviour_events') GROUP BY 1 ORDER BY 1""",
    )


def _null_rates(con: duckdb.DuckDBPyConnection, raw_events: str) -> pd.DataFrame:
    """Share of null values per event column in the raw events."""
    nulls = ", ".join(
        f"1 - count({sql_identifier(c)}) / count(*)::DOUBLE AS {sql_identifier(c)}"
        for c in EVENT_COLUMNS
    )
    return (
        query_pandas(con, f"SELECT {nulls} FROM {raw_events}")
        .T.reset_index()
        .set_axis(["column", "null_share"], axis=1)
    )


def _rule_hits_frame(rule_hits: dict[str, dict[str, int]]) -> pd.DataFrame:
    """Per table, the rules some rows break, with the count of rows breaking each."""
    return pd.DataFrame(
        [
            {"table": t, "rule": rule, "rows_breaking_it": n}
            for t, per_rule in rule_hits.items()
            for rule, n in per_rule.items()
            if n
        ]
    )


def _bot_summary(con: duckdb.DuckDBPyConnection, tables: dict[str, Path]) -> pd.DataFrame:
    """Users scored and flagged, events excluded and clean, with the flagged shares."""
    scores = parquet_relation(tables["user_traffic_scores"])
    bots = query_pandas(
        con,
        f"""SELECT (SELECT count(*) FROM {scores}) AS users_scored,
            (SELECT count_if(is_bot) FROM {scores}) AS users_flagged,
            (SELECT coalesce(sum(events_excluded), 0)
                FROM {parquet_relation(tables["behaviour_exclusions"])}) AS events_excluded,
            (SELECT count(*) FROM {_relation(tables, "events_clean")}) AS clean_events""",
    )
    bots = bots.astype({c: int for c in bots.columns})
    bots["flagged_user_share_%"] = 100 * bots["users_flagged"] / bots["users_scored"]
    bots["excluded_event_share_%"] = 100 * bots["events_excluded"] / bots["clean_events"]
    return bots


def _top_flagged_users(con: duckdb.DuckDBPyConnection, scores: str) -> pd.DataFrame:
    """The 25 highest-scoring flagged users, with their reasons."""
    return query_pandas(
        con,
        f"""SELECT user_id, bot_score, events, pattern, reasons FROM {scores}
        WHERE is_bot ORDER BY bot_score DESC, events DESC LIMIT 25""",
    )


def _flagged_by_pattern(con: duckdb.DuckDBPyConnection, scores: str) -> pd.DataFrame:
    """Flagged users and their events per bot pattern."""
    return query_pandas(
        con,
        f"""SELECT pattern, count(*) AS users, sum(events) AS events FROM {scores}
        WHERE is_bot GROUP BY 1 ORDER BY users DESC""",
    )


def _bot_score_bins(con: duckdb.DuckDBPyConnection, scores: str) -> pd.DataFrame:
    """Users per bot-score bin (50 bins, by lower edge)."""
    return query_pandas(
        con,
        f"""SELECT least(floor(bot_score * 50), 49) / 50 AS score, count(*) AS users
        FROM {scores} GROUP BY 1 ORDER BY 1""",
    )


def _bot_confusion(
    con: duckdb.DuckDBPyConnection, scores: str, traffic_labels: Path | None
) -> pd.DataFrame:
    """Per labelled traffic class and kind: users flagged and not (empty without labels)."""
    if traffic_labels is None or not traffic_labels.exists():
        return pd.DataFrame()
    # The generator's answer key names raw user ids; the tables hold pseudonyms.
    labels = pd.read_parquet(traffic_labels)
    con.register("traffic_labels", labels.assign(user_id=pseudonymise(labels["user_id"])))
    return query_pandas(
        con,
        f"""SELECT coalesce(l.traffic_class, 'human') AS traffic_class,
            coalesce(l.kind, 'human') AS kind, count(*) AS users,
            count_if(s.is_bot) AS flagged, count_if(NOT s.is_bot) AS not_flagged,
            round(100 * count_if(s.is_bot) / count(*), 2) AS "flagged_%"
        FROM {scores} s LEFT JOIN traffic_labels l
            USING (user_id)
        GROUP BY ALL ORDER BY 1, 2""",
    ).astype({"users": int, "flagged": int, "not_flagged": int})


def _item_outlier_counts(con: duckdb.DuckDBPyConnection, outliers: str) -> pd.DataFrame:
    """Items flagged by each outlier test, and all items."""
    return query_pandas(
        con,
        f"""SELECT count_if(price_outlier) AS price_outliers,
            count_if(popularity_spike) AS popularity_spikes,
            count_if(bot_driven) AS bot_driven_items, count(*) AS items
        FROM {outliers}""",
    )


def _top_item_outliers(con: duckdb.DuckDBPyConnection, outliers: str) -> pd.DataFrame:
    """The 15 busiest outlier items, with their reasons."""
    return query_pandas(
        con,
        f"""SELECT item_id, category, events, reasons FROM {outliers}
        WHERE is_outlier ORDER BY events DESC LIMIT 15""",
    )


def _bot_groups(con: duckdb.DuckDBPyConnection, tables: dict[str, Path]) -> pd.DataFrame:
    """The 15 largest lockstep groups with their windows, reasons, members (from the user
    scores' group_id) and items."""
    if "bot_groups" not in tables:
        return pd.DataFrame()
    scores = parquet_relation(tables["user_traffic_scores"])
    return query_pandas(
        con,
        f"""SELECT g.group_id, g.members, g.items, g.days, g.first_window, g.last_window,
            g.reason, string_agg(s.user_id, ', ' ORDER BY s.user_id) AS member_ids, g.item_ids
        FROM {parquet_relation(tables["bot_groups"])} g
        LEFT JOIN {scores} s ON s.group_id = g.group_id
        GROUP BY ALL ORDER BY g.members DESC, g.group_id LIMIT 15""",
    )


def _plots(data: ReportData) -> dict[str, str]:
    plots = {}
    if len(data.by_reason):
        fig, ax = plt.subplots(figsize=(7, 3))
        data.by_reason.groupby("reason")["rows"].sum().sort_values().plot.barh(
            ax=ax, color="#c0392b"
        )
        ax.set_xlabel("rows quarantined")
        ax.set_title("Quarantined rows by reason")
        plots["reasons"] = figure_html(fig)
    if len(data.by_day) > 1:
        fig, ax = plt.subplots(figsize=(9, 3))
        data.by_day.set_index("day")[["clean", "quarantined"]].plot.bar(
            ax=ax, stacked=True, color=["#27ae60", "#c0392b"], rot=90
        )
        ax.set_yscale("log")
        ax.set_title("Rows per event day (log scale)")
        plots["days"] = figure_html(fig)
    fig, ax = plt.subplots(figsize=(7, 2.8))
    data.null_rates.set_index("column")["null_share"].mul(100).plot.bar(ax=ax, rot=30)
    ax.set_ylabel("% null")
    ax.set_title("Null rate by column (raw events)")
    plots["nulls"] = figure_html(fig)
    if len(data.drift_days):
        fig, ax = plt.subplots(figsize=(9, 3))
        cols = ["event_type_mix_psi", "price_psi", "events_per_user_psi"]
        data.drift_days.set_index("day")[cols].plot(ax=ax, marker="o")
        ax.axhline(0.25, color="grey", ls="--", lw=1)
        ax.set_ylabel("PSI vs day before")
        ax.set_title("Drift, day over day (dashed: 0.25 = a real shift)")
        plots["drift"] = figure_html(fig)
    b = data.bots.iloc[0]
    fig, ax = plt.subplots(figsize=(5, 2.5))
    ax.barh(
        ["users flagged", "events excluded"],
        [b["flagged_user_share_%"], b["excluded_event_share_%"]],
        color="#8e44ad",
    )
    ax.set_xlabel("% of all")
    ax.set_title("Bot traffic")
    plots["bots"] = figure_html(fig)
    if len(data.bot_score_bins):
        fig, ax = plt.subplots(figsize=(7, 2.8))
        ax.bar(data.bot_score_bins["score"], data.bot_score_bins["users"], width=0.02, align="edge")
        ax.set_yscale("log")
        ax.axvline(BOT_THRESHOLD, color="#c0392b", ls="--", lw=1)
        ax.set_xlabel("bot score (dashed: flag threshold)")
        ax.set_ylabel("users (log)")
        ax.set_title("Bot score distribution")
        plots["bot_scores"] = figure_html(fig)
    return plots


def _table(frame: pd.DataFrame, empty: str = "none") -> str:
    if frame is None or len(frame) == 0:
        return f"<p><em>{empty}</em></p>"
    return frame.to_html(index=False, float_format=lambda v: f"{v:,.4f}", na_rep="", border=0)


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.85em}
td,th{border-bottom:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f4f4f4}.bad{color:#c0392b;font-weight:bold}.ok{color:#27ae60}
h2{border-bottom:2px solid #eee;margin-top:1.6em}"""


def render_report(data: ReportData, data_docs: Path | None = None) -> str:
    """The report as one HTML page (no external files, opens from disk)."""
    plots = _plots(data)
    totals = data.accounting.groupby("table")[["rows_read", "rows_clean", "rows_quarantined"]].sum()
    balanced = bool(
        (totals["rows_read"] == totals["rows_clean"] + totals["rows_quarantined"]).all()
    )
    failed = data.checks[data.checks["status"] == "FAILED"] if len(data.checks) else data.checks
    warns = (
        data.drift_checks[data.drift_checks["warn"]]
        if len(data.drift_checks)
        else data.drift_checks
    )
    docs = (
        f"<p>Expectation-level detail: <a href='{data_docs.as_uri()}'>Great Expectations Data Docs</a></p>"
        if data_docs
        else ""
    )
    status = (
        f"<p class='{'ok' if balanced else 'bad'}'>Rows read = clean + quarantined for every file: "
        f"{'yes' if balanced else 'NO'}.</p>"
        f"<p>{len(failed)} expectation(s) failing, {len(warns)} drift warning(s).</p>"
    )
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>Data-quality report, run {html.escape(data.run_id)}</title><style>{CSS}</style></head><body>
<h1>Data-quality report</h1>
<p>Run <code>{html.escape(data.run_id)}</code>, built {pd.Timestamp.now(tz="UTC"):%Y-%m-%d %H:%M} UTC.</p>
{status}{docs}
<h2>Rows in, clean, quarantined</h2>{_table(totals.reset_index())}
{plots.get("days", "")}
<h2>Quarantine by reason and source</h2>{plots.get("reasons", "")}{_table(data.by_reason)}
<p>Each row has exactly one reason: the first rule it broke. The rules below count every row that breaks them, whatever else is wrong with it.</p>
{_table(data.rule_hits)}
<h2>Null rates by column (raw events)</h2>{plots["nulls"]}{_table(data.null_rates)}
<h2>Checks: what fails, and since when</h2>{_table(failed, "every expectation passed in its latest run")}
<details><summary>All expectations ({len(data.checks)})</summary>{_table(data.checks)}</details>
<h2>Drift against the previous day and the reference window</h2>{_table(data.drift_checks)}
{plots.get("drift", "")}<details><summary>Day by day</summary>{_table(data.drift_days)}</details>
<h2>Bot traffic</h2>{plots["bots"]}{_table(data.bots)}
<h3>Bot score distribution</h3>{plots.get("bot_scores", "")}
<h3>Flagged users by pattern</h3>{_table(data.flagged_by_pattern)}
<h3>Highest-scoring flagged users, with their reasons</h3>{_table(data.flagged_users)}
<h3>Groups acting in lockstep</h3>{_table(data.bot_groups, "no group found")}
<h3>Confusion matrix against the labels</h3>{_table(data.confusion, "no labels for this data (a real export has none)")}
<h2>Item outliers</h2>{_table(data.item_outlier_counts)}{_table(data.top_item_outliers)}
<h2>Per file</h2><details><summary>{len(data.accounting)} files</summary>{_table(data.accounting)}</details>
</body></html>"""
