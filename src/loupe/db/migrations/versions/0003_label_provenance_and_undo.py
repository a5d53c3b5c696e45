"""label provenance (accepted model version) and undo groups

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 10:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("annotations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("model_version_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            "fk_annotations_model_version_id",
            "model_versions",
            ["model_version_id"],
            ["id"],
            ondelete="SET NULL",
        )
    with op.batch_alter_table("annotation_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("group_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("reverts", sa.String(length=32), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_annotation_events_group_id"), ["group_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("annotation_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_annotation_events_group_id"))
        batch_op.drop_column("reverts")
        batch_op.drop_column("group_id")
    with op.batch_alter_table("annotations", schema=None) as batch_op:
        batch_op.drop_constraint("fk_annotations_model_version_id", type_="foreignkey")
        batch_op.drop_column("model_version_id")
