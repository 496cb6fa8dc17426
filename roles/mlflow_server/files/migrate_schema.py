"""Bring an MLflow tracking database to the schema of the MLflow that runs this script.

Run with the Python of the virtualenv about to serve: `python migrate_schema.py <env file>`.
The decision follows the database: its own alembic_version is compared with this MLflow's head
revision, and only a database behind it is migrated (an empty one is created). Every step runs
in one PostgreSQL session that holds an advisory lock, so two runs (two replicas, two operators,
a timer and an operator) never migrate at the same time; the second finds the database at head.
The backend URI, password included, is read from the server's env file: never from argv or the
environment, which `ps` and sudo's log would show. Prints one JSON line with what it found and did.
"""

import json
import shlex
import sys

# pg_advisory_lock takes a bigint; this one is "mlflow_stack migrate" for anyone reading pg_locks.
LOCK_KEY = int.from_bytes(b"mlfwmigr", "big") & 0x7FFFFFFFFFFFFFFF


def backend_uri(env_file):
    with open(env_file) as fh:
        for line in fh:
            if line.startswith("MLFLOW_BACKEND_STORE_URI="):
                return shlex.split(line)[0].split("=", 1)[1]
    raise SystemExit(f"{env_file} has no MLFLOW_BACKEND_STORE_URI line")


def migrate(env_file):
    import mlflow
    import sqlalchemy
    from alembic.script import ScriptDirectory
    from mlflow.store.db import utils
    from sqlalchemy.pool import StaticPool

    head = utils._get_latest_schema_revision()
    scripts = ScriptDirectory.from_config(utils._get_alembic_config(db_url=""))
    # One connection for everything: the lock, the check and MLflow's own upgrade (which opens
    # its connections from this engine) share the session, so the lock covers the upgrade.
    engine = sqlalchemy.create_engine(backend_uri(env_file), poolclass=StaticPool)
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": LOCK_KEY})
            connection.commit()
        before = utils._get_schema_version(engine)
        empty = utils._is_empty_database(engine)
        if before is not None and before != head:
            try:
                scripts.get_revision(before)
            except Exception:
                raise SystemExit(
                    f"the database is at schema revision {before}, which MLflow {mlflow.__version__} does not know:"
                    " a newer MLflow has migrated it. Set mlflow_server_version to that release (or later), or restore"
                    " the backup taken before that upgrade."
                )
        if empty:
            utils._initialize_tables(engine)
        elif before != head:
            utils._upgrade_db(engine)
        after = utils._get_schema_version(engine)
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": LOCK_KEY})
            connection.commit()
    finally:
        engine.dispose()
    if after != head:
        raise SystemExit(f"the database is at schema revision {after} after the upgrade, not at {head}")
    return {"mlflow": mlflow.__version__, "before": before, "head": head, "after": after,
            "created": empty, "migrated": empty or before != head}


if __name__ == "__main__":
    print(json.dumps(migrate(sys.argv[1])))
