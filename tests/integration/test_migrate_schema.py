"""roles/mlflow_server/files/migrate_schema.py against a real PostgreSQL (verify-full) on loopback,
with the MLflow of the test's own Python: the database decides whether to migrate, a database
behind the head is migrated, a second run changes nothing, a database a newer MLflow migrated is
refused, and a run waits for the advisory lock another session holds.
"""

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "roles" / "mlflow_server" / "files" / "migrate_schema.py"
sys.path.insert(0, str(Path(__file__).resolve().parent / "postgresql"))

from tls_server import PASSWORD, TlsPostgres, find_bindir  # noqa: E402

mlflow = pytest.importorskip("mlflow")
psycopg2 = pytest.importorskip("psycopg2")


@pytest.fixture(scope="module")
def pg():
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries absent and not installable here")
    server = TlsPostgres(bindir).start()
    yield server
    server.stop()


@pytest.fixture
def database(pg, tmp_path):
    """A new empty database owned by app, and the env file the role writes for it."""
    name = "m_" + uuid.uuid4().hex[:10]
    pg.psql(f"CREATE DATABASE {name} OWNER app")
    uri = (f"postgresql+psycopg2://app:{quote(PASSWORD, safe='')}@localhost:{pg.port}/{name}"
           f"?sslmode=verify-full&sslrootcert={pg.ca_file}")
    env = tmp_path / "mlflow.env"
    env.write_text(f'MLFLOW_BACKEND_STORE_URI="{uri}"\nPGSSLMODE=verify-full\n')
    return {"name": name, "uri": uri, "env": str(env), "port": pg.port, "ca": pg.ca_file}


def migrate(database, **kwargs):
    return subprocess.run([sys.executable, str(SCRIPT), database["env"]], capture_output=True, text=True,
                          timeout=120, **kwargs)


def result(proc):
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def connect(database):
    return psycopg2.connect(host="localhost", port=database["port"], dbname=database["name"], user="app",
                            password=PASSWORD, sslmode="verify-full", sslrootcert=database["ca"])


def revision(database):
    with connect(database) as conn, conn.cursor() as cur:
        cur.execute("SELECT version_num FROM alembic_version")
        return cur.fetchone()[0]


def head_and_previous():
    from alembic.script import ScriptDirectory
    from mlflow.store.db import utils

    script = ScriptDirectory.from_config(utils._get_alembic_config(db_url=""))
    head = script.get_revision(utils._get_latest_schema_revision())
    return head.revision, head.down_revision


def test_an_empty_database_is_created_at_head_and_a_second_run_changes_nothing(database):
    head, _ = head_and_previous()
    first = result(migrate(database))
    assert first["created"] and first["migrated"] and first["before"] is None and first["after"] == head
    second = result(migrate(database))
    assert not second["migrated"] and second["before"] == second["after"] == head
    assert revision(database) == head


def test_a_database_behind_the_head_is_migrated(database):
    """The state a restored pre-upgrade dump leaves: tables at an older revision."""
    import sqlalchemy
    from alembic import command
    from mlflow.store.db import utils

    head, previous = head_and_previous()
    engine = sqlalchemy.create_engine(database["uri"])
    # What mlflow's _initialize_tables does, stopping one revision short of the head.
    utils.InitialBase.metadata.create_all(engine)
    config = utils._get_alembic_config(database["uri"])
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, previous)
    engine.dispose()
    assert revision(database) == previous

    done = result(migrate(database))
    assert done["migrated"] and not done["created"] and (done["before"], done["after"]) == (previous, head)
    assert revision(database) == head


def test_a_database_a_newer_mlflow_migrated_is_refused(database):
    result(migrate(database))
    with connect(database) as conn, conn.cursor() as cur:
        cur.execute("UPDATE alembic_version SET version_num = 'ffffffffffff'")
    proc = migrate(database)
    assert proc.returncode != 0
    assert "schema revision ffffffffffff, which MLflow %s does not know" % mlflow.__version__ in proc.stderr
    assert PASSWORD not in proc.stdout + proc.stderr


def test_a_run_waits_for_the_advisory_lock_another_session_holds(database):
    key = int.from_bytes(b"mlfwmigr", "big") & 0x7FFFFFFFFFFFFFFF
    holder = connect(database)
    holder.autocommit = True
    holder.cursor().execute("SELECT pg_advisory_lock(%s)", (key,))
    try:
        proc = subprocess.Popen([sys.executable, str(SCRIPT), database["env"]], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        time.sleep(8)
        assert proc.poll() is None, "the migration ran while another session held the lock"
        with connect(database) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'experiments'")
            assert cur.fetchone()[0] == 0
    finally:
        holder.cursor().execute("SELECT pg_advisory_unlock(%s)", (key,))
        holder.close()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert json.loads(out.strip().splitlines()[-1])["created"]
