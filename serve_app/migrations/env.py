"""Alembic's entry point, for `serve_app.db.migrate` only: it passes the connection (in a
transaction that holds the schema lock) and the store's version table."""

from alembic import context

attributes = context.config.attributes
context.configure(
    connection=attributes["connection"],
    version_table=attributes["version_table"],
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
