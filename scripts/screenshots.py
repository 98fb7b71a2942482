"""Screenshots of the MLflow UI and optuna-dashboard for a finished sweep + compare (docs/screenshots/).

How the committed ones were made (docs/screenshots/README.md has the whole sequence): a smoke sweep and
comparison into /tmp/shots, `mlflow server` on :5055 and `optuna-dashboard` on :8085, then this script.

Needs: `pip install playwright` (any venv) and a Chromium binary (Debian: apt-get install chromium).
Usage: python take_screenshots.py OUTDIR [MLFLOW_URL] [OPTUNA_URL] [EXPERIMENT_NAME]
"""

import json
import re
import sys
import urllib.request

from playwright.sync_api import sync_playwright

OUT = sys.argv[1]
ML = sys.argv[2] if len(sys.argv) > 2 else "http://127.0.0.1:5055"
OD = sys.argv[3] if len(sys.argv) > 3 else "http://127.0.0.1:8085"
EXP_NAME = sys.argv[4] if len(sys.argv) > 4 else "cloudmask-smoke"
CHROMIUM = "/usr/bin/chromium"
W, H = 1400, 900
MODE = "workflowType=machine_learning"  # MLflow 3 opens untagged experiments in its "GenAI" mode otherwise


def api(url, body=None):
    """GET (or POST ``body`` as JSON to) a server's REST API."""
    req = urllib.request.Request(
        url, data=json.dumps(body).encode() if body is not None else None, headers={"Content-Type": "application/json"}
    )
    return json.load(urllib.request.urlopen(req))


exp = api(f"{ML}/api/2.0/mlflow/experiments/get-by-name?experiment_name={EXP_NAME}")["experiment"]["experiment_id"]
runs = api(
    f"{ML}/api/2.0/mlflow/runs/search",
    {
        "experiment_ids": [exp],
        "max_results": 1000,
        "filter": "tags.role = 'final_retrain'",
        "order_by": ["attributes.run_name ASC"],
    },
)["runs"]
retrain = runs[0]
run_id = retrain["info"]["run_id"]
model_id = retrain["outputs"]["model_outputs"][0]["model_id"]
study = api(f"{OD}/api/studies")["study_summaries"][-1]["study_id"]  # the last architecture's study


def latest(filter_string):
    """The newest run of the experiment matching ``filter_string``."""
    body = {"experiment_ids": [exp], "max_results": 1, "filter": filter_string}
    return api(f"{ML}/api/2.0/mlflow/runs/search", {**body, "order_by": ["attributes.start_time DESC"]})["runs"][0]


final = latest("tags.role = 'final_compare' and attributes.status = 'FINISHED'")
trial = latest("tags.role = 'trial' and tags.optuna_trial_number = '0'")
print("experiment", exp, "run", retrain["info"]["run_name"], run_id, "model", model_id, "study", study)

with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])

    def page(url):
        """Open ``url`` and let the single-page app render."""
        pg = browser.new_page(viewport={"width": W, "height": H})
        pg.goto(url)
        pg.wait_for_timeout(6000)
        close = pg.get_by_role("button", name="Close")  # MLflow Assistant side panel, open on a first visit
        if close.count():
            close.first.click()
            pg.wait_for_timeout(800)
        return pg

    def shot(pg, name):
        """Save the page as OUT/name and close it."""
        pg.mouse.move(5, H - 10)
        pg.wait_for_timeout(800)
        pg.screenshot(path=f"{OUT}/{name}")
        pg.close()
        print("wrote", name)

    # 1. runs table: expand nested runs, pick columns, widen the run-name column
    pg = page(f"{ML}/#/experiments/{exp}/runs?{MODE}")
    expander = 'button[data-component-id*="runnamecellrenderer"]'
    for i in range(pg.locator(expander).count()):
        pg.locator(expander).nth(i).click()
        pg.wait_for_timeout(800)
    pg.locator('[data-testid="column-selection-dropdown"]', has_text="Columns").click()
    pg.wait_for_timeout(1000)
    tree, search = pg.locator('[data-testid="column-selector-tree"]'), pg.get_by_placeholder("Search columns")
    for col in ["Dataset", "Source", "best_val_iou", "val_iou", "test_pooled_iou"]:  # toggles: hide 2, show 3
        search.fill(col)
        pg.wait_for_timeout(600)
        tree.locator(".du-bois-light-tree-treenode").filter(has_text=re.compile(f"^{col}$")).locator(
            ".du-bois-light-tree-checkbox"
        ).first.click()
        pg.wait_for_timeout(600)
    pg.keyboard.press("Escape")
    pg.wait_for_timeout(800)
    handle = pg.locator('.ag-header-cell[col-id="attributes.`Run Name`"] .ag-header-cell-resize').first
    bb = handle.bounding_box()
    x0, y0 = bb["x"] + bb["width"] / 2, bb["y"] + bb["height"] / 2
    handle.hover()
    pg.mouse.down()
    pg.wait_for_timeout(200)
    for k in range(1, 21):
        pg.mouse.move(x0 + 125 * k / 20, y0)
        pg.wait_for_timeout(30)
    pg.mouse.up()
    pg.wait_for_timeout(1000)
    shot(pg, "mlflow-runs.png")

    # 2. one retrained model's run page, and its logged model's artifacts (MLmodel)
    shot(page(f"{ML}/#/experiments/{exp}/runs/{run_id}?{MODE}"), "mlflow-retrained-model.png")
    pg = page(f"{ML}/#/experiments/{exp}/models/{model_id}/artifacts?{MODE}")
    for name in ["data", "MLmodel"]:
        pg.get_by_text(name, exact=True).first.click()
        pg.wait_for_timeout(2500)
    shot(pg, "mlflow-retrained-model-artifacts.png")

    # 3. the final comparison's run (its description is the verdict; tags winner/leader/verdict; the
    # headline difference, interval and p-value metrics) and a trial's run (its Optuna study and number)
    pg = page(f"{ML}/#/experiments/{exp}/runs/{final['info']['run_id']}?{MODE}")
    pg.get_by_placeholder("Search metrics").first.fill("minus")  # the headline difference and its interval
    pg.wait_for_timeout(1000)
    shot(pg, "mlflow-final-compare.png")
    shot(page(f"{ML}/#/experiments/{exp}/runs/{trial['info']['run_id']}?{MODE}"), "mlflow-trial.png")

    # 4. optuna-dashboard: trial list (user attributes ray_trial_id, mlflow_run_id) and history plot
    shot(page(f"{OD}/dashboard/studies/{study}/trials"), "optuna-dashboard.png")
    shot(page(f"{OD}/dashboard/studies/{study}"), "optuna-dashboard-history.png")
    browser.close()
