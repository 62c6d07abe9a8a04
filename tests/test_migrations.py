"""`flask db upgrade` on an empty database gives exactly the models' schema (no drift)."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade

from app.extensions import db
from app.models import compared_in_migrations


# SQLite: Alembic cannot reflect expression indexes and says so (the due-time index is
# PostgreSQL's only; `compared_in_migrations` leaves it out of the comparison on both).
@pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression-based")
def test_upgrade_matches_models(make_app, db_kind):
    """Upgrade from nothing, compare with the models, then downgrade to nothing again."""
    app = make_app(db_kind)
    with app.app_context():
        db.drop_all()
        upgrade()
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={
                "compare_type": True, "compare_server_default": True,
                "include_object": compared_in_migrations(conn.dialect.name)}), db.metadata)
        assert diff == [], diff
        downgrade(revision="base")
        with db.engine.connect() as conn:
            tables = set(db.inspect(conn).get_table_names()) - {"alembic_version"}
        assert tables == set()
        db.create_all()  # leave what the fixture's teardown expects
