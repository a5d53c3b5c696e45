"""Backup and restore of a whole deployment: database, media, features, models.

``loupe backup PATH`` / ``loupe restore PATH`` call :func:`core.backup` and
:func:`core.restore`; the layout of PATH is described in :mod:`.manifest`.
"""
