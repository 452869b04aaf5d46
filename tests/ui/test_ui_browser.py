"""The Dagster UI in a real browser (Debian's chromium, driven by Playwright), against an instance
with real history: drain runs of both queues on the local stack and every asset materialized
(tests/ui_instance.py). What a user looks at: every asset in its group, an asset's metadata and
check results, every sensor and schedule under Automation, a drain run's counts.

Chromium comes from Debian (`make install` installs it: apt package `chromium`); nothing is
downloaded at run time. Screenshots land in tests/artifacts/ui/ (gitignored). Without the
browser or Playwright the test skips, naming what is missing; with CI=true it fails instead.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import dagster as dg
import pytest

from tests.ui.ui_instance import REPO_ROOT, Webserver, populate

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("ui")]   # one browser, one populated instance

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO_ROOT / "tests" / "artifacts" / "ui"
LOCATION = "mailroom"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 60_000   # two shared cores: the UI's first render of a page can take a while


def _missing_browser() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} not found: install Debian's chromium (`make test` does: apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright (Python) not installed: pip install -c constraints.txt -e '.[dev]'"
    return None


@pytest.fixture(scope="module")
def browser_ready() -> None:
    missing = _missing_browser()
    if missing:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"browser test cannot run in CI: {missing}")
        pytest.skip(missing)


@pytest.fixture(scope="module")
def ui(browser_ready, local_stack, tmp_path_factory):
    """(page, base url, history, defs): the webserver on an instance that populate() filled."""
    from playwright.sync_api import expect, sync_playwright

    from devstack.env import DAGSTER_HOME

    base = tmp_path_factory.mktemp("ui")
    home = base / "dagster_home"
    home.mkdir()
    shutil.copy(DAGSTER_HOME / "dagster.yaml", home / "dagster.yaml")
    env = {**local_stack.env, "DUCKDB_PATH": str(base / "mailroom.duckdb"), "DAGSTER_HOME": str(home),
           "EMAIL_TRANSPORT": "ses", "SES_MAX_SEND_RATE": "50"}
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)
    timings: dict[str, float] = {}

    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        local_stack.purge()
        started = time.monotonic()
        with dg.DagsterInstance.get() as instance:
            history = populate(local_stack, instance)
        timings["populate"] = time.monotonic() - started

        from pipelines.definitions import defs

        server = Webserver(dict(os.environ), base / "webserver.log")
        try:
            started = time.monotonic()
            server.wait_ready()
            timings["webserver"] = time.monotonic() - started
            with sync_playwright() as p:
                context = p.chromium.launch_persistent_context(
                    str(base / "chromium-profile"), executable_path=str(CHROMIUM), headless=True,
                    # Tall enough for the billing group's whole lineage graph: nodes outside the
                    # viewport are not rendered.
                    args=CHROMIUM_ARGS, viewport={"width": 1440, "height": 3400})
                context.set_default_timeout(TIMEOUT_MS)
                expect.set_options(timeout=TIMEOUT_MS)
                try:
                    page = context.new_page()
                    yield UI(page, server.url, history, defs, home)
                finally:
                    context.close()
        finally:
            server.stop()
            print(f"\nUI test: populate {timings.get('populate', 0):.1f}s, webserver ready "
                  f"{timings.get('webserver', 0):.1f}s; screenshots in {ARTIFACTS}")


class UI:
    COMMUNITY_DIALOG = "Join the Dagster community"

    def __init__(self, page, url, history, defs, dagster_home: Path) -> None:
        self.page, self.url, self.history, self.defs, self.dagster_home = page, url, history, defs, dagster_home
        self.dialog_dismissed = False

    def open(self, path: str) -> None:
        """Go to `path`; the first time, dismiss Dagster's community dialog as a user does (Skip)."""
        self.page.goto(self.url + path)
        if not self.dialog_dismissed:
            dialog = self.page.get_by_role("dialog").filter(has_text=self.COMMUNITY_DIALOG)
            dialog.wait_for(state="visible")
            dialog.get_by_role("button", name="Skip").click()
            dialog.wait_for(state="hidden")
            self.dialog_dismissed = True

    def shot(self, name: str) -> Path:
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


def _groups(defs: dg.Definitions) -> dict[str, set[str]]:
    graph = defs.resolve_asset_graph()
    groups: dict[str, set[str]] = {}
    for key in graph.get_all_asset_keys():
        groups.setdefault(graph.get(key).group_name, set()).add(key.to_user_string())
    return groups


def test_first_visit_dialog_is_dismissed_and_stays_dismissed(ui):
    ui.open("/assets")
    from playwright.sync_api import expect

    expect(ui.page.get_by_text(UI.COMMUNITY_DIALOG)).to_have_count(0)
    ui.page.reload()
    expect(ui.page.locator("[data-testid^='checkbox-']").first).to_be_attached()
    expect(ui.page.get_by_text(UI.COMMUNITY_DIALOG)).to_have_count(0)


def test_every_asset_is_listed_in_its_group(ui):
    from playwright.sync_api import expect

    groups = _groups(ui.defs)
    assert "email" in groups, f"groups in the Definitions: {sorted(groups)}"
    for group, assets in sorted(groups.items()):
        # The group's list: exactly its assets, one row (with its checkbox) each.
        ui.open(f"/locations/{LOCATION}/asset-groups/{group}/list")
        rows = ui.page.locator("[data-testid^='checkbox-']")
        expect(rows).to_have_count(len(assets))
        listed = {rows.nth(i).get_attribute("data-testid").removeprefix("checkbox-") for i in range(len(assets))}
        assert listed == assets, f"group {group}: listed {sorted(listed)}, defined {sorted(assets)}"
        ui.shot(f"group-{group}-list")
        # The group's lineage graph: a node per asset.
        ui.open(f"/locations/{LOCATION}/asset-groups/{group}/lineage")
        for asset in sorted(assets):
            expect(ui.page.get_by_text(asset, exact=True).first).to_be_visible()
        ui.shot(f"group-{group}-lineage")

    # The catalog names each asset's group in the asset's row.
    ui.open("/assets")
    for group, assets in groups.items():
        for asset in assets:
            row = ui.page.locator("[class*='VirtualizedTable_row']").filter(
                has=ui.page.locator(f"[data-testid='checkbox-{asset}']"))
            expect(row).to_have_count(1)
            expect(row.get_by_role("link").filter(has_text=re.compile(rf"^\s*{re.escape(group)}\s*$"))).to_be_visible()
    ui.shot("catalog")


def _as_shown(number: float | int) -> str:
    """A number as the UI (JavaScript) prints it: 0.0 -> "0", 0.25 -> "0.25"."""
    if isinstance(number, float) and number.is_integer():
        return str(int(number))
    return repr(number)


def _latest_materialization(ui, asset: str) -> dict[str, dg.MetadataValue]:
    with dg.DagsterInstance.from_config(str(ui.dagster_home)) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    assert event is not None, f"{asset} was never materialized"
    return event.asset_materialization.metadata


def _check_evaluations(ui, asset: str) -> dict[str, bool]:
    with dg.DagsterInstance.from_config(str(ui.dagster_home)) as instance:
        records = instance.event_log_storage.get_event_records(
            dg.EventRecordsFilter(dg.DagsterEventType.ASSET_CHECK_EVALUATION), limit=100)
    evaluations: dict[str, bool] = {}
    for record in sorted(records, key=lambda r: (r.event_log_entry.timestamp, r.storage_id)):
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        if evaluation.asset_key == dg.AssetKey(asset):
            evaluations[evaluation.check_name] = evaluation.passed
    return evaluations


@pytest.mark.parametrize("asset", ["ses_reputation", "email_sends_daily"])
def test_an_asset_shows_its_metadata_and_check_results(ui, asset):
    from playwright.sync_api import expect

    metadata = _latest_materialization(ui, asset)
    assert {"rows", "preview"} <= set(metadata), f"{asset} metadata: {sorted(metadata)}"
    ui.open(f"/assets/{asset}")
    page = ui.page
    expect(page.get_by_text("Metadata", exact=True).first).to_be_visible()
    for key, value in metadata.items():
        row = page.get_by_role("row").filter(has=page.get_by_role("cell", name=key, exact=True))
        expect(row.first).to_be_visible()
        if isinstance(value, (dg.IntMetadataValue, dg.FloatMetadataValue)):
            expect(row.first).to_contain_text(_as_shown(value.value))
    # The Markdown preview is rendered as a table in its row, with the query's columns.
    preview = page.get_by_role("row").filter(has=page.get_by_role("cell", name="preview", exact=True)).first
    columns = [c.strip() for c in metadata["preview"].value.splitlines()[0].strip("|").split("|")]
    for column in columns:
        expect(preview.get_by_role("columnheader", name=column, exact=True)).to_be_visible()
    ui.shot(f"asset-{asset}")

    # Checks: every check of the asset, with the outcome the instance recorded.
    evaluations = _check_evaluations(ui, asset)
    checks = {k.name for k in ui.defs.resolve_asset_graph().get_check_keys_for_assets({dg.AssetKey(asset)})}
    assert checks and set(evaluations) == checks, f"{asset}: checks {checks}, evaluated {evaluations}"
    ui.open(f"/assets/{asset}?view=checks")
    # The list beside the detail pane: each check's name (long ones truncated, the full name kept
    # for measuring), then its latest outcome.
    for name in evaluations:
        expect(page.get_by_text(name, exact=True).first).to_be_attached()
    expect(page.get_by_text("Latest execution").first).to_be_visible()
    shown = page.inner_text("body")
    for name, passed in evaluations.items():
        outcome = "Succeeded" if passed else "Failed"
        assert re.search(rf"{re.escape(name)}\s+{outcome}", shown), f"{name}: {outcome} not shown"
    ui.shot(f"asset-{asset}-checks")


def test_automation_lists_every_sensor_and_schedule(ui):
    from playwright.sync_api import expect

    names = {s.name for s in ui.defs.sensors or []} | {s.name for s in ui.defs.schedules or []}
    assert {"email_requests_sensor", "ses_notifications_sensor"} <= names
    ui.open("/automation")
    for name in sorted(names):
        expect(ui.page.get_by_role("link", name=re.compile(rf"\b{re.escape(name)}\b"))).to_be_visible()
    ui.shot("automation")


@pytest.mark.parametrize("job, applied", [("send_email_batch_job", "sent"),
                                          ("ingest_ses_notifications_job", "events_new")])
def test_a_finished_drain_run_shows_its_counts(ui, job, applied):
    from playwright.sync_api import expect

    run_id = ui.history.runs[job][0]
    output = ui.history.outputs[job] if len(ui.history.runs[job]) == 1 else None
    ui.open(f"/runs/{run_id}")
    page = ui.page
    expect(page.get_by_text("Success", exact=True).first).to_be_visible()
    step_output = page.locator("[class*='LogsRow']").filter(has_text="STEP_OUTPUT")
    expect(step_output.first).to_be_visible()
    if output is None:  # several runs: the first one's counts from its own event log
        with dg.DagsterInstance.from_config(str(ui.dagster_home)) as instance:
            logs = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_OUTPUT)
        output = {k: v.value for k, v in logs[0].dagster_event.event_specific_data.metadata.items()}
    for key in ("received", "quarantined", applied):
        assert key in output, f"{job} output has no {key}: {sorted(output)}"
    ui.shot(f"run-{job}")
    # The row shows the first entries; the rest behind "View full message", as a user sees them.
    # The step's ledger materializations have such a link too: open each until the output's.
    links = page.get_by_text("View full message", exact=True)
    dialog = page.get_by_role("dialog")
    for i in range(links.count()):
        links.nth(i).click()
        expect(dialog).to_be_visible()
        if "STEP_OUTPUT" in dialog.inner_text():
            break
        dialog.get_by_role("button", name="Done").click()
        expect(dialog).to_be_hidden()
    expect(dialog).to_contain_text("STEP_OUTPUT")
    for key in ("received", "quarantined", applied):
        expect(dialog.get_by_role("row").filter(has=page.get_by_role("cell", name=key, exact=True)).first
               ).to_contain_text(re.compile(rf"{key}\s*{output[key]}\s*$"))
    ui.shot(f"run-{job}-output")
    dialog.get_by_role("button", name="Done").click()
    expect(dialog).to_be_hidden()


def test_every_materialized_asset_carries_rows_a_preview_and_figures(ui):
    for asset in ui.history.materialized:
        metadata = _latest_materialization(ui, asset)
        assert isinstance(metadata.get("rows"), dg.IntMetadataValue), f"{asset}: no row count"
        assert isinstance(metadata.get("preview"), dg.MarkdownMetadataValue), f"{asset}: no Markdown preview"
        figures = [k for k, v in metadata.items() if k != "rows"
                   and isinstance(v, (dg.IntMetadataValue, dg.FloatMetadataValue))]
        assert figures, f"{asset}: no numeric figures besides rows"


# --- the default demo, the mail viewer, incidents -----------------------------------------------

def _latest_check_outcomes(ui) -> dict[str, bool]:
    """Each check's latest evaluation, passed or not, from its execution history (what the UI reads)."""
    outcomes: dict[str, bool] = {}
    with dg.DagsterInstance.from_config(str(ui.dagster_home)) as instance:
        for key in ui.defs.resolve_asset_graph().asset_check_keys:
            for record in instance.event_log_storage.get_asset_check_execution_history(key, limit=10):
                evaluation = record.event and record.event.dagster_event.event_specific_data
                if hasattr(evaluation, "passed"):   # newest first; skip one only planned
                    outcomes[key.name] = evaluation.passed
                    break
    return outcomes


def _checks_by_asset(defs: dg.Definitions) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for key in defs.resolve_asset_graph().asset_check_keys:
        out.setdefault(key.asset_key.to_user_string(), set()).add(key.name)
    return out


def _assert_checks_shown(ui, outcomes: dict[str, bool], shot: str) -> None:
    """Each asset's Checks tab shows each of its checks with the outcome the instance recorded."""
    from playwright.sync_api import expect

    for asset, names in sorted(_checks_by_asset(ui.defs).items()):
        ui.open(f"/assets/{asset}?view=checks")
        for name in names:
            expect(ui.page.get_by_text(name, exact=True).first).to_be_attached()
        expect(ui.page.get_by_text("Latest execution").first).to_be_visible()
        for name in names:   # the list beside the detail pane: name, then latest outcome (rendered late)
            outcome = "Succeeded" if outcomes[name] else "Failed"
            expect(ui.page.locator("body")).to_contain_text(re.compile(rf"{re.escape(name)}\s*{outcome}"))
        ui.shot(f"{shot}-{asset}")


def test_every_check_is_green_on_the_default_demo(ui):
    outcomes = _latest_check_outcomes(ui)
    every = {k.name for k in ui.defs.resolve_asset_graph().asset_check_keys}
    assert set(outcomes) == every, f"never evaluated: {sorted(every - set(outcomes))}"
    assert all(outcomes.values()), f"red on the default demo: {sorted(n for n, p in outcomes.items() if not p)}"
    _assert_checks_shown(ui, outcomes, "demo-checks")


def test_the_mail_viewer_shows_an_email_sent_through_dispatch(ui, local_stack):
    import uuid
    from urllib.parse import quote

    from playwright.sync_api import expect

    from pipelines.email.builder import message_id_for
    from pipelines.email.dispatch import dispatch
    from pipelines.query import read_only

    address = f"grace+{uuid.uuid4().hex[:8]}@example.org"
    request_id = dispatch("password-reset", [{"email": address, "name": "Grace", "username": "grace",
                                              "verified": True}],
                          {"n_hours": 6, "token": "viewer-test-token", "username": "grace"})
    with dg.DagsterInstance.from_config(str(ui.dagster_home)) as instance:
        result = ui.defs.resolve_job_def("send_email_batch_job").execute_in_process(
            instance=instance, run_config={"ops": {"send_email_batch": {"config": {"wait_seconds": 1,
                                                                                    "max_seconds": 20}}}})
    assert result.success and result.output_for_node("send_email_batch")["sent"] >= 1
    with read_only(os.environ["DUCKDB_PATH"], wait_seconds=30) as (conn, _):
        subject, message_id = conn.execute("SELECT subject, message_id FROM email_messages WHERE request_id = ?",
                                           [request_id]).fetchone()

    page = ui.page
    page.goto(f"{local_stack.state.mail_url}/?q={quote(address)}")
    link = page.get_by_role("link", name=subject)
    deadline = time.monotonic() + 20   # the mailbox simulator copies SES mail within ~1 s of the send
    while link.count() == 0 and time.monotonic() < deadline:
        time.sleep(0.5)
        page.reload()
    expect(link).to_have_count(1)
    expect(page.get_by_role("row").filter(has=link)).to_contain_text(address)
    ui.shot("mail-viewer-list")
    link.click()
    expect(page.get_by_role("heading", name=subject)).to_be_visible()
    summary = page.locator("table.summary")
    expect(summary.get_by_role("row").filter(has_text="Recipient")).to_contain_text(address)
    # The header the builder set, and the id SES gave the send (what the ledger records for SES).
    header_id = message_id_for(request_id, address, "mailroom.test")
    expect(summary.get_by_role("row").filter(has_text="Message-ID")).to_contain_text(f"<{header_id}>")
    expect(summary.get_by_role("row").filter(has_text="Sent via")).to_contain_text(message_id)
    expect(summary.get_by_role("row").filter(has_text="List-Unsubscribe")).to_be_visible()
    expect(page.locator("#text-part")).to_contain_text("Someone asked to reset the password")
    expect(page.locator("#text-part")).to_contain_text("viewer-test-token")
    frame = page.frame_locator("iframe[title='HTML part']")
    expect(frame.get_by_text("Someone asked to reset the password").first).to_be_visible()
    ui.shot("mail-viewer-message")


def test_the_incidents_turn_the_documented_checks_red(ui, local_stack):
    """Last in this file: it leaves the instance unhealthy on purpose."""
    from devstack import incidents
    from pipelines.query import read_only
    from tests.ui.ui_instance import History, drain_stripe, ingest_ses, materialize

    history = History()
    with dg.DagsterInstance.from_config(str(ui.dagster_home)) as instance:
        def launch(job: str, run_config: dict) -> tuple[str, bool]:
            result = ui.defs.resolve_job_def(job).execute_in_process(instance=instance, run_config=run_config,
                                                                     raise_on_error=False)
            return result.run_id, result.success

        lines = incidents.run(incidents.ORDER, local_stack.state, dict(os.environ), launch, seed=21)
        print("\n".join(lines))
        # What the sensors do under `make dev`: drain what the incidents queued, refresh, check.
        sent = ui.defs.resolve_job_def("send_email_batch_job").execute_in_process(
            instance=instance, run_config={"ops": {"send_email_batch": {"config": {"wait_seconds": 1,
                                                                                    "max_seconds": 60}}}}
        ).output_for_node("send_email_batch")
        assert sent["quarantined"] == 1 and sent["sent"] >= 25, sent
        ingest_ses(ui.defs, instance, history, sent["sent"])
        drain_stripe(ui.defs, instance, history, local_stack)
        materialize(ui.defs, instance)

    outcomes = _latest_check_outcomes(ui)
    documented = {check for incident in incidents.INCIDENTS.values() for check in incident.checks}
    red = {name for name, passed in outcomes.items() if not passed}
    assert red == documented, f"red: {sorted(red)}; the incidents document {sorted(documented)}"
    with read_only(os.environ["DUCKDB_PATH"], wait_seconds=30) as (conn, _):
        drift = dict(conn.execute("SELECT action, count(*) FROM billing_drift GROUP BY 1").fetchall())
        leaks = conn.execute("SELECT organization_id FROM billing_leaks ORDER BY 1").fetchall()
    assert drift.get("updated", 0) >= 1 and drift.get("unrepaired", 0) >= 1, drift   # one repaired, one not
    assert leaks == [("org-defunct",), ("org-umbrella",)]
    _assert_checks_shown(ui, outcomes, "incident-checks")
