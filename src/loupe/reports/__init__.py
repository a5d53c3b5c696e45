"""PDF reports: charts (matplotlib, Agg) and the case report (fpdf2).

This package knows nothing of the database: :mod:`loupe.services.reports.core`
gathers a :class:`~loupe.reports.case_report.CaseReportData` and hands it here.
"""
