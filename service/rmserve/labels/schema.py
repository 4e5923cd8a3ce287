"""The label store's tables (SQLAlchemy Core: one definition for SQLite and PostgreSQL)."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

schema_version = sa.Table("schema_version", metadata, sa.Column("version", sa.Integer, nullable=False))

# A task is leasable while done < wanted and its lease (if any) has expired; one holder at a time.
tasks = sa.Table(
    "label_tasks",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(64), nullable=False, unique=True),  # NewTask.key: adding twice adds once
    sa.Column("source", sa.String(300), nullable=False),
    sa.Column("prompt", sa.Text, nullable=False),
    sa.Column("responses", sa.JSON, nullable=False),  # [str], the task's own order
    sa.Column("wanted", sa.Integer, nullable=False),  # independent orderings asked for
    sa.Column("done", sa.Integer, nullable=False, default=0),  # orderings recorded (skips are not)
    sa.Column("priority", sa.Double, nullable=False, default=0.0),
    sa.Column("created", sa.Double, nullable=False),
    sa.Column("lease_labeller", sa.String(300)),
    sa.Column("lease_token", sa.String(64)),
    sa.Column("lease_shown", sa.JSON(none_as_null=True)),  # [int]: shown position -> response index
    sa.Column("lease_expires", sa.Double),
    sa.Index("label_tasks_queue", "priority", "id"),
)

# One answer per labeller and task: an ordering, or a skip (ranking null).
orderings = sa.Table(
    "label_orderings",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("task_id", sa.Integer, sa.ForeignKey("label_tasks.id"), nullable=False),
    sa.Column("labeller", sa.String(300), nullable=False),
    sa.Column("ranking", sa.JSON(none_as_null=True)),  # [int] response indices best first; null: skipped
    sa.Column("shown", sa.JSON, nullable=False),  # the order the labeller saw
    sa.Column("created", sa.Double, nullable=False),
    sa.UniqueConstraint("task_id", "labeller", name="label_orderings_once"),
)
