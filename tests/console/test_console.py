"""The web console (``/console/``) in Debian's Chromium, headless, against the real stack.

Every step done on a page is checked again through the REST API: the console is only a client of it.
Screenshots of the main pages go to ``test-output/console/`` (ignored by git).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import RunningStack
from tests.helpers import identical, inventories
from tests.peers.openstack.fixtures import KeystoneStack

pytestmark = pytest.mark.slow

#: Debian's package; Playwright's own browser download is not possible on the test machines
CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[2] / "test-output" / "console"
MiB = 1024**2
#: long enough for a whole execution or deployment of the sample VM on a loaded machine
SLOW_MS = 300_000
TASKS = ["VALIDATE_TRANSFER_SOURCE_INPUTS", "DEPLOY_TRANSFER_SOURCE_RESOURCES", "REPLICATE_DISKS",
         "DELETE_TRANSFER_SOURCE_RESOURCES"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # Playwright starts Chromium with --no-sandbox by default: the tests run as root here.
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1366, "height": 900})  # a laptop screen
    # Actions and assertions wait alike: a page that asks the API (an endpoint's instances, listed by
    # a worker) can take more than expect's default 5 s while the TCG runs load both cores.
    context.set_default_timeout(30_000)
    expect.set_options(timeout=30_000)
    page = context.new_page()
    errors: list[str] = []
    paths: set[str] = set()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("request", lambda request: paths.add(urlsplit(request.url).path))
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"uncaught errors in the console's scripts: {errors}"
    # The console's own files, and the public REST API: nothing a script could not call too.
    assert paths and all(p.startswith(("/console/", "/v1/")) for p in paths), sorted(paths)


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def log_in(page: Any, stack: RunningStack, project: str | None = None, token: str | None = None,
           heading: str = "Endpoints") -> str:
    """By default a project of the test's own (noauth trusts the id), so every list starts empty."""
    from playwright.sync_api import expect

    project = project or f"console-{uuid.uuid4().hex[:8]}"
    page.goto(f"{stack.url}/console/")
    page.get_by_label("Project id").fill(project)
    if token:
        page.get_by_label("Keystone token").fill(token)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(heading)
    return project


def create_local_endpoint(page: Any, name: str, path: str) -> None:
    page.fill("#endpoint-name", name)
    page.select_option("#endpoint-type", "local")
    page.fill("#connection-path", path)
    page.click("#endpoint-create")


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_endpoint_form_shows_the_api_error_beside_the_field_and_creates_nothing(
        stack: RunningStack, page: Any) -> None:
    from playwright.sync_api import expect

    project = log_in(page, stack)
    page.fill("#endpoint-name", "no-path")
    page.select_option("#endpoint-type", "local")
    field = page.locator(".field", has=page.locator("#connection-path"))
    expect(field.get_by_text("path", exact=False).first).to_be_visible()  # generated from the schema
    page.click("#endpoint-create")
    error = field.locator(".field-error")
    expect(error).to_be_visible()
    shot(page, "endpoint-error")
    with stack.client(project) as api:
        # The same body sent by a script gets the same 400: the page shows the API's own message.
        r = api.http.post("/endpoints", json={"endpoint": {"name": "no-path", "type": "local", "connection_info": {}}})
        assert r.status_code == 400, r.text
        expect(error).to_have_text(r.json()["error"]["message"])
        assert api.list_endpoints() == []
    expect(page.locator("#endpoint-rows")).to_contain_text("No endpoints yet.")


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_endpoint_instances_search_validate_and_delete(stack: RunningStack, page: Any) -> None:
    from playwright.sync_api import expect

    src, _ = inventories(stack, ["vm-a", "vm-b"], data_mib=1)
    project = log_in(page, stack)
    create_local_endpoint(page, "lab", str(src))
    row = page.locator("#endpoint-rows tr", has_text="lab")
    expect(row).to_have_count(1)
    with stack.client(project) as api:
        (endpoint,) = api.list_endpoints()
        row.get_by_role("button", name="Validate").click()
        expect(row.locator(".validation")).to_have_text("valid")
        assert api.validate_endpoint(endpoint["id"])["valid"] is True

        # Instances, all and then searched: the page lists what the API lists.
        row.get_by_role("link", name="Instances").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Instances of lab")
        expect(page.locator("#instances li")).to_have_count(2)
        page.get_by_label("Name contains").fill("-B")
        page.get_by_role("button", name="Search").click()
        expect(page.locator("#instances li")).to_have_count(1)
        expect(page.locator("#instances li")).to_contain_text("vm-b —")
        assert [i["name"] for i in api.list_instances(endpoint["id"], name="-B")] == ["vm-b"]

        # Delete asks first; going back keeps the endpoint.
        page.get_by_role("link", name="Endpoints").click()
        row.get_by_role("button", name="Delete").click()
        page.get_by_role("dialog").get_by_role("button", name="Go back").click()
        expect(row).to_have_count(1)
        assert len(api.list_endpoints()) == 1
        row.get_by_role("button", name="Delete").click()
        page.get_by_role("dialog").get_by_role("button", name="Delete endpoint").click()
        expect(page.locator("#endpoint-rows")).to_contain_text("No endpoints yet.")
        assert api.list_endpoints() == []


def task_status(page: Any, panel: str, task_type: str) -> Any:
    return page.locator(f"#{panel}-tasks tr[data-task-type={task_type}] .task-status")


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_transfer_wizard_execute_deploy_and_cancel(stack: RunningStack, page: Any) -> None:
    from playwright.sync_api import expect

    # 24 MiB read at 2 MiB/s: each execution replicates for ~12 s, time to see it run and cancel it.
    src, dst = inventories(stack, ["vm-a"], data_mib=24)
    limit = 2 * MiB
    project = log_in(page, stack)
    tag = src.name.removeprefix("src-")
    names = {"source": f"src-{tag}", "destination": f"dst-{tag}"}
    create_local_endpoint(page, names["source"], str(src))
    expect(page.locator("#endpoint-rows")).to_contain_text(names["source"])
    create_local_endpoint(page, names["destination"], str(dst))
    expect(page.locator("#endpoint-rows")).to_contain_text(names["destination"])
    shot(page, "endpoints")
    with stack.client(project) as api:
        made = {e["name"]: e for e in api.list_endpoints()}
        assert set(made) == set(names.values())
        assert made[names["source"]]["type"] == made[names["destination"]]["type"] == "local"
        assert made[names["source"]]["connection_info"] == {"path": str(src)}
        assert made[names["destination"]]["connection_info"] == {"path": str(dst)}

        # The wizard: the instance comes from the source endpoint's instance list.
        page.get_by_role("link", name="Transfers").click()
        page.get_by_role("link", name="New transfer").click()
        page.select_option("#origin", label=f"{names['source']} (local)")
        page.get_by_label("vm-a —").check()
        page.select_option("#destination", label=f"{names['destination']} (local)")
        page.select_option("#destination-env-verify_boot", "false")  # the sample disk holds no OS to boot
        page.fill("#source-env-json", json.dumps({"bandwidth_limit": limit}))
        page.check("#skip-os-morphing")
        shot(page, "transfer-wizard")
        page.click("#create-transfer")
        expect(page.get_by_role("heading", level=1)).to_contain_text("Transfer ")
        transfer_id = page.evaluate("location.hash").removeprefix("#/transfers/")
        t = api.get_transfer(transfer_id)
        assert (t["origin_endpoint_id"], t["destination_endpoint_id"]) == (made[names["source"]]["id"],
                                                                           made[names["destination"]]["id"])
        assert t["instances"] == ["vm-a"] and t["scenario"] == "replica" and t["skip_os_morphing"] is True
        assert t["destination_environment"]["verify_boot"] is False
        assert t["source_environment"]["bandwidth_limit"] == limit
        assert t["last_execution_status"] == "UNEXECUTED"

        # Execute: the bar climbs to 100 % with every task COMPLETED, without reloading the page.
        page.click("#execute")
        expect(page.locator("#execution-progress-text")).to_have_text("100 %", timeout=SLOW_MS)
        for task_type in TASKS:
            expect(task_status(page, "execution", task_type)).to_have_text("COMPLETED")
        expect(page.locator("#execution-status")).to_contain_text("COMPLETED")
        shot(page, "transfer-executed")
        (first,) = api.list_executions(transfer_id)
        e1 = api.get_execution(transfer_id, first["id"])
        assert e1["status"] == "COMPLETED" and e1["number"] == 1
        assert [x["task_type"] for x in e1["tasks"]] == TASKS
        assert {x["status"] for x in e1["tasks"]} == {"COMPLETED"}

        # Deploy, and follow the deployment to its end.
        expect(page.locator("#deploy-skip-os-morphing")).to_be_checked()
        page.click("#deploy")
        expect(page.get_by_role("heading", level=1)).to_contain_text("Deployment ")
        deployment_id = page.evaluate("location.hash").removeprefix("#/deployments/")
        expect(page.locator("#deployment-status")).to_contain_text("COMPLETED", timeout=SLOW_MS)
        expect(page.locator("#deployment-progress-text")).to_have_text("100 %")
        shot(page, "deployment")
        d = api.get_deployment(deployment_id)
        assert d["last_execution_status"] == "COMPLETED" and d["transfer_id"] == transfer_id
        assert {x["status"] for x in d["tasks"]} == {"COMPLETED"}
        replica = dst / ".sterna-replicas" / transfer_id / "vm-a" / "disk-0.raw"
        assert identical(replica, dst / "vm-a" / "disk-0.qcow2"), "the deployed disk holds the replica's bytes"

        # A second execution, cancelled from the page while it replicates.
        page.get_by_role("link", name=transfer_id[:8]).click()
        expect(page.locator("#execute")).to_be_enabled()
        page.click("#execute")
        expect(page.locator("#execution-title")).to_have_text("Execution #2")
        expect(task_status(page, "execution", "REPLICATE_DISKS")).to_have_text("RUNNING", timeout=120_000)
        page.click("#execution-cancel")
        page.get_by_role("dialog").get_by_role("button", name="Cancel it").click()
        expect(page.locator("#execution-status")).to_contain_text("CANCELED", timeout=120_000)
        expect(task_status(page, "execution", "REPLICATE_DISKS")).to_have_text("CANCELED")
        expect(page.locator("#execution-cancel")).to_have_count(0)  # nothing left to cancel
        shot(page, "execution-canceled")
        second = max(api.list_executions(transfer_id), key=lambda e: e["number"])
        e2 = api.get_execution(transfer_id, second["id"])
        assert e2["number"] == 2 and e2["status"] == "CANCELED"
        assert next(x for x in e2["tasks"] if x["task_type"] == "REPLICATE_DISKS")["status"] == "CANCELED"
        assert api.get_transfer(transfer_id)["last_execution_status"] == "CANCELED"

        # Schedules: a bad hour gets the API's message beside the field and creates nothing.
        page.fill("#schedule-hour", "24")
        page.click("#schedule-create")
        hour_error = page.locator("#schedule-hour-error")
        r = api.http.post(f"/transfers/{transfer_id}/schedules", json={"schedule": {"hour": 24}, "enabled": True,
                                                                        "auto_deploy": False, "expiration_date": None})
        assert r.status_code == 400, r.text
        expect(hour_error).to_have_text(r.json()["error"]["message"])
        assert api.list_schedules(transfer_id, show_expired=True) == []
        page.fill("#schedule-minute", "0")
        page.fill("#schedule-hour", "3")
        page.uncheck("#schedule-enabled")  # a paused schedule: it never fires during the test
        page.click("#schedule-create")
        row = page.locator("#schedules tbody tr[data-schedule-id]")
        expect(row).to_have_count(1)
        expect(row.locator("code").nth(1)).to_have_text("0 3 * * *")
        expect(row.locator(".schedule-enabled")).to_have_text("disabled")
        shot(page, "schedules")
        (schedule,) = api.list_schedules(transfer_id, show_expired=True)
        assert schedule["enabled"] is False and schedule["auto_deploy"] is False
        assert (schedule["schedule"]["minute"], schedule["schedule"]["hour"]) == (0, 3)
        assert row.get_attribute("data-schedule-id") == schedule["id"]
        row.get_by_role("button", name="Delete").click()
        page.get_by_role("dialog").get_by_role("button", name="Delete schedule").click()
        expect(page.locator("#schedules tbody")).to_have_text("No schedules.")
        assert api.list_schedules(transfer_id, show_expired=True) == []


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_one_shot_migration_from_the_wizard(stack: RunningStack, page: Any) -> None:
    from playwright.sync_api import expect

    src, dst = inventories(stack, ["vm-a"], data_mib=4)
    project = log_in(page, stack)
    with stack.client(project) as api:
        # The endpoint form has its own tests above: these two come from the API.
        a = api.create_endpoint(f"src-{src.name}", "local", {"path": str(src)})
        b = api.create_endpoint(f"dst-{dst.name}", "local", {"path": str(dst)})
        page.goto(f"{stack.url}/console/#/transfers/new")
        page.select_option("#origin", a["id"])
        page.get_by_label("vm-a —").check()
        page.select_option("#destination", b["id"])
        page.select_option("#destination-env-verify_boot", "false")
        page.check("#skip-os-morphing")
        page.click("#create-migration")
        expect(page.get_by_role("heading", level=1)).to_contain_text("Migration ")
        migration_id = page.evaluate("location.hash").removeprefix("#/migrations/")
        expect(page.locator("#migration-status")).to_contain_text("COMPLETED", timeout=SLOW_MS)
        expect(page.locator("#migration-progress-text")).to_have_text("100 %")
        shot(page, "migration")
        m = api.get_migration(migration_id)
        assert m["last_execution_status"] == "COMPLETED" and m["instances"] == ["vm-a"]
        assert (m["origin_endpoint_id"], m["destination_endpoint_id"]) == (a["id"], b["id"])
        assert m["tasks"] and {t["status"] for t in m["tasks"]} == {"COMPLETED"}
        # A migration (POST /migrations), not a replica transfer: on transfers, it is listed as its own
        # live_migration transfer (as Coriolis lists it), and nothing else was created.
        assert [(t["id"], t["scenario"]) for t in api.list_transfers()] in (
            [], [(migration_id, "live_migration")]), "a migration, not a replica transfer"
        page.get_by_role("link", name="Migrations").click()
        expect(page.locator(f"#migrations tr[data-migration-id='{migration_id}']")).to_contain_text("COMPLETED")


def test_keystone_user_of_one_project_sees_nothing_of_another(keystone_stack: KeystoneStack, page: Any) -> None:
    from playwright.sync_api import expect

    assert keystone_stack.cloud is not None
    peers = keystone_stack.cloud.peers
    alice, bob = peers.users["alice"], peers.users["bob"]
    src, _ = inventories(keystone_stack, ["vm-a"], data_mib=1)
    log_in(page, keystone_stack, alice.project_id, peers.token("alice"))
    create_local_endpoint(page, f"alice-{src.name}", str(src))
    expect(page.locator("#endpoint-rows")).to_contain_text(f"alice-{src.name}")
    with keystone_stack.as_user("alice") as api:
        endpoint_id = next(e["id"] for e in api.list_endpoints() if e["name"] == f"alice-{src.name}")
    page.get_by_role("button", name="Log out").click()

    log_in(page, keystone_stack, bob.project_id, peers.token("bob"))
    expect(page.locator("#endpoint-rows")).to_contain_text("No endpoints yet.")
    with keystone_stack.as_user("bob") as api:
        assert api.list_endpoints() == []
        # Alice's endpoint by its id: the API's 404, shown as it is.
        r = api.http.get(f"/endpoints/{endpoint_id}")
        assert r.status_code == 404, r.text
        page.goto(f"{keystone_stack.url}/console/#/endpoints/{endpoint_id}/instances")
        expect(page.get_by_role("alert")).to_have_text(r.json()["error"]["message"])
        shot(page, "keystone-not-found")
        # Bob's token on Alice's project: the API refuses it, and so does the console.
        r = api.http.get(f"{keystone_stack.url}/v1/{alice.project_id}/endpoints")
        assert r.status_code == 403, r.text
    page.get_by_role("button", name="Log out").click()
    log_in(page, keystone_stack, alice.project_id, peers.token("bob"), heading="Something went wrong")
    expect(page.get_by_role("alert")).to_have_text(r.json()["error"]["message"])
    expect(page.get_by_text(f"alice-{src.name}")).to_have_count(0)
