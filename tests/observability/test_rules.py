"""The alert rules, their promtool unit tests, runbooks and the Alertmanager config, checked with the
real promtool and amtool binaries (Debian packages prometheus and prometheus-alertmanager)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "alerts"
RULES = ALERTS / "driftloop.rules.yml"
SEVERITIES = {"page", "warning"}


def _tool(name: str) -> str:
    path = shutil.which(name) or f"/usr/bin/{name}"
    if not Path(path).exists():
        pytest.fail(f"{name} is missing: run scripts/install-debian-packages.sh")
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=REPO)


def alert_rules() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_check_rules_passes():
    result = _run(_tool("promtool"), "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_pass():
    files = sorted(str(p) for p in (ALERTS / "tests").glob("*.yml"))
    assert files
    result = _run(_tool("promtool"), "test", "rules", *files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(files)


def test_promtool_fails_a_unit_test_that_expects_the_wrong_thing(tmp_path):
    """The unit tests can fail: a copy of one that expects no alert where one fires is rejected."""
    text = (ALERTS / "tests" / "judges.test.yml").read_text()
    broken = text.replace("values: '0x5 1x20'", "values: '0x25'")  # never exhausted
    assert broken != text
    path = tmp_path / "broken.test.yml"
    path.write_text(broken.replace("../driftloop.rules.yml", str(RULES)))
    result = _run(_tool("promtool"), "test", "rules", str(path))
    assert result.returncode != 0
    assert "DriftloopJudgeBudgetExhausted" in result.stdout + result.stderr


def test_every_alert_has_for_severity_annotations_and_a_runbook():
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names))
    for rule in alert_rules():
        name = rule["alert"]
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), f"{name}: no for:"
        assert rule["labels"]["severity"] in SEVERITIES, name
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook_url"} <= set(annotations), name
        assert annotations["runbook_url"] == f"alerts/runbooks/{name}.md"
        runbook = REPO / annotations["runbook_url"]
        assert runbook.exists(), f"{name}: {runbook} is missing"
        assert runbook.read_text().startswith(f"# {name} ({rule['labels']['severity']})")


def test_the_required_alerts_exist_and_quality_regression_pages():
    by_name = {rule["alert"]: rule for rule in alert_rules()}
    required = {
        "DriftloopQualityRegression",
        "DriftloopDriftDetected",
        "DriftloopRetrainFailed",
        "DriftloopGateRejected",
        "DriftloopCaptureDropping",
        "DriftloopSidecarDown",
        "DriftloopNoTraffic",
        "DriftloopJudgeBudgetExhausted",
        "DriftloopRollback",
    }
    assert required <= set(by_name)
    assert by_name["DriftloopQualityRegression"]["labels"]["severity"] == "page"
    assert "driftloop_judge_score_mean" in by_name["DriftloopQualityRegression"]["expr"]
    assert by_name["DriftloopDriftDetected"]["labels"]["severity"] == "warning"


def test_every_runbook_belongs_to_an_alert():
    names = {rule["alert"] for rule in alert_rules()}
    assert {p.stem for p in (ALERTS / "runbooks").glob("*.md")} == names


def _unit_cases() -> dict[str, dict[str, int]]:
    """Per alert: how many unit-test evaluations expect it firing and how many expect nothing."""
    cases: dict[str, dict[str, int]] = {}
    for path in (ALERTS / "tests").glob("*.yml"):
        for test in yaml.safe_load(path.read_text())["tests"]:
            for check in test.get("alert_rule_test", []):
                seen = cases.setdefault(check["alertname"], {"firing": 0, "silent": 0})
                seen["firing" if check.get("exp_alerts") else "silent"] += 1
    return cases


def test_every_alert_has_unit_tests_firing_and_not_firing():
    cases = _unit_cases()
    for rule in alert_rules():
        seen = cases.get(rule["alert"], {"firing": 0, "silent": 0})
        assert seen["firing"] >= 1, f"{rule['alert']}: no unit test where it fires"
        assert seen["silent"] >= 1, f"{rule['alert']}: no unit test where it stays silent"
    assert set(cases) <= {rule["alert"] for rule in alert_rules()}


def test_every_recording_rule_is_used_by_an_alert():
    groups = yaml.safe_load(RULES.read_text())["groups"]
    recorded = [r["record"] for g in groups for r in g["rules"] if "record" in r]
    exprs = " ".join(rule["expr"] for rule in alert_rules())
    assert recorded
    for name in recorded:
        assert re.fullmatch(r"[a-z_]+:[a-z_]+:[a-z0-9_]+", name), f"{name}: not level:metric:ops"
        assert name in exprs, f"recording rule {name} is used by no alert"


def test_amtool_accepts_the_alertmanager_config():
    result = _run(_tool("amtool"), "check-config", str(ALERTS / "alertmanager.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["severity=page", "alertname=DriftloopQualityRegression"], "pager"),
        (["severity=page", "alertname=DriftloopSidecarDown"], "pager"),
        (["severity=warning", "alertname=DriftloopDriftDetected"], "tickets"),
    ],
)
def test_alertmanager_routes_pages_to_the_pager_webhook(labels, receiver):
    config = str(ALERTS / "alertmanager.yml")
    result = _run(_tool("amtool"), "config", "routes", "test", f"--config.file={config}", *labels)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [receiver]
    am = yaml.safe_load((ALERTS / "alertmanager.yml").read_text())
    [pager] = [r for r in am["receivers"] if r["name"] == "pager"]
    assert pager["webhook_configs"][0]["url"].startswith("http")


def test_the_debian_package_list_installs_the_binaries_used_here():
    packages = (REPO / "scripts" / "debian-packages.txt").read_text().split()
    assert {"prometheus", "prometheus-alertmanager"} <= set(packages)
