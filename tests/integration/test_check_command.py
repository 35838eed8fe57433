"""`outreach check` as an operator runs it: exit 0 on the repository, 1 naming the file."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import REPO_ROOT
from tests.support import run_outreach


def copy_templates(tmp_path: Path) -> Path:
    target = tmp_path / "templates"
    shutil.copytree(REPO_ROOT / "templates", target)
    return target


def test_check_passes_on_the_repository(tmp_path: Path) -> None:
    result = run_outreach("check", cwd=REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 errors" in result.stdout


def test_a_threat_added_to_a_template_fails_naming_the_file(tmp_path: Path) -> None:
    templates = copy_templates(tmp_path)
    target = templates / "negotiation_follow_up" / "sms.en-US.j2"
    target.write_text(
        target.read_text(encoding="utf-8") + "\nPay today or the police will arrest you.\n",
        encoding="utf-8",
    )
    result = run_outreach("check", "--templates", str(templates), cwd=REPO_ROOT)
    assert result.returncode == 1, result.stdout
    assert "negotiation_follow_up/sms.en-US.j2" in result.stdout


def test_removing_the_opt_out_fails_naming_where_it_lived(tmp_path: Path) -> None:
    templates = copy_templates(tmp_path)
    layout = templates / "_layouts" / "sms.zh-CN.j2"
    text = layout.read_text(encoding="utf-8")
    assert "回复TD退订" in text
    layout.write_text(text.replace("回复TD退订", ""), encoding="utf-8")
    result = run_outreach("check", "--templates", str(templates), cwd=REPO_ROOT)
    assert result.returncode == 1, result.stdout
    assert "sms.zh-CN.j2" in result.stdout
    assert "opt" in result.stdout.lower()


def test_a_broken_policy_fails_with_the_key_path(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    text = (REPO_ROOT / "schedules" / "default.yaml").read_text(encoding="utf-8")
    policy.write_text(text.replace("template: late_follow_up", "template: late_folow_up", 1))
    result = run_outreach("check", "--policy", str(policy), cwd=REPO_ROOT)
    assert result.returncode == 1
    assert "policy.yaml" in result.stdout
    assert "late_folow_up" in result.stdout
