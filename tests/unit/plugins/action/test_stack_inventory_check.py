"""The warning an inventory copied from the previous release gets: which adapter files it can
delete outright, which lines are the operator's own and must stay, and none for today's shape."""

import importlib.util
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]
PREVIOUS = ROOT / "tests" / "fixtures" / "inventory_previous_release"
spec = importlib.util.spec_from_file_location("stack_inventory_check",
                                              ROOT / "plugins" / "action" / "stack_inventory_check.py")
check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check)


def rel(found, base):
    return {str(Path(p).relative_to(base)): (c, s) for p, c, s in found}


def test_previous_release_adapters_are_all_deletable():
    found = rel(check.scan([str(PREVIOUS)], check.wired_names()), PREVIOUS)
    assert sorted(found) == ["group_vars/all/backup.yml", "group_vars/minio/minio.yml",
                             "group_vars/mlflow_server/mlflow_server.yml", "group_vars/nginx_auth/nginx_auth.yml",
                             "group_vars/postgresql/postgresql.yml"]
    assert all(not stays for _, stays in found.values()), found
    assert "nginx_auth_https_port" in found["group_vars/nginx_auth/nginx_auth.yml"][0]


def test_an_operators_own_line_is_kept(tmp_path):
    shutil.copytree(PREVIOUS, tmp_path / "inv")
    backup = tmp_path / "inv" / "group_vars" / "all" / "backup.yml"
    backup.write_text(backup.read_text().replace("backup_retention_count: 14", "backup_retention_count: 30"))
    found = rel(check.scan([str(tmp_path / "inv")], check.wired_names()), tmp_path / "inv")
    can_go, stays = found["group_vars/all/backup.yml"]
    assert stays == ["backup_retention_count"] and "backup_db_host" in can_go
    text = check.message(str(backup), can_go, stays)
    assert "keep backup_retention_count" in text and "delete those lines" in text


def test_todays_inventories_get_no_warning():
    for name in ("prod", "local"):
        assert check.scan([str(ROOT / "inventories" / name)], check.wired_names()) == []


def test_vaulted_and_missing_files_are_skipped(tmp_path):
    (tmp_path / "group_vars" / "all").mkdir(parents=True)
    (tmp_path / "group_vars" / "all" / "vault.yml").write_text("$ANSIBLE_VAULT;1.1;AES256\n6162\n")
    assert check.scan([str(tmp_path), str(tmp_path / "nowhere")], check.wired_names()) == []


def test_each_missing_value_is_one_warning_naming_it():
    warnings = check.missing_warnings({"vault_b": "why b", "vault_a": "why a"})
    assert warnings == ["vault_a is not set: why a", "vault_b is not set: why b"]
    assert check.missing_warnings({}) == []
