"""prediction sort indexes (the grid sorted by draft confidence or uncertainty)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 11:35:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # (version, value, item) serves "ORDER BY value, item_id LIMIT 200" for one
    # model version from the index alone: the first sorted page at 100k items.
    op.create_index(
        "ix_predictions_version_confidence",
        "predictions",
        ["model_version_id", "confidence", "item_id"],
    )
    op.create_index(
        "ix_predictions_version_uncertainty",
        "predictions",
        ["model_version_id", "uncertainty", "item_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_predictions_version_uncertainty", table_name="predictions")
    op.drop_index("ix_predictions_version_confidence", table_name="predictions")
